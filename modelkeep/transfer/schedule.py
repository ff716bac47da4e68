"""When frozen layers join the training: linear probe then fine-tune, and gradual unfreezing.

``UnfreezeSchedule`` is a callback: at the start of each epoch it unfreezes (``LoopState.unfreeze``,
so the parameters join the optimizer as new groups with their own learning rates and the optimizer
state of the others stays untouched) every stage due by that epoch. What is unfrozen is a pure
function of the epoch, and unfreezing what already trains does nothing, so a run resumed from any
checkpoint — mid-epoch (the checkpoint carries the optimizer's groups) or at an epoch boundary (the
schedule catches up) — trains exactly as the uninterrupted one. Its state is the transfer settings
it was made from: a resume with other settings is refused rather than mixing two runs.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any, Sequence

from ..errors import ConfigError
from .batchnorm import release_unfrozen
from .selectors import Layer

__all__ = ["Stage", "UnfreezeSchedule", "group_blocks", "plan_stages"]


class Stage:
    """At the start of epoch ``epoch`` (0-based), the parameters ``names`` join the training."""

    __slots__ = ("epoch", "names", "layers")

    def __init__(self, epoch: int, names: Sequence[str], layers: Sequence[str]) -> None:
        self.epoch, self.names, self.layers = epoch, tuple(names), tuple(layers)

    def __repr__(self) -> str:
        return f"Stage(epoch={self.epoch}, layers={list(self.layers)})"


def block_key(short: str) -> str:
    """The block a layer belongs to, from its name: up to its first index (``layer1_0_conv1`` -> ``layer1_0``,
    ``features_3_conv_0_0`` -> ``features_3``, BERT's ``layer_5`` -> ``layer_5``); a name without one is its own."""
    match = re.match(r"^(.*?[A-Za-z][A-Za-z0-9]*_\d+)(?:_|$)", short)
    return match.group(1) if match else short


def group_blocks(layers: Sequence[Layer], blocks: Any) -> list[list[Layer]]:
    """``layers`` (in order) cut into blocks: runs of neighbours that share a block.

    ``"layers"``: every layer alone. ``"auto"``: the block in the layer's name (``block_key``), so a zoo
    ResNet unfreezes residual block by residual block. A list of globs: the layers whose names match the
    same glob form one block; a layer matching none is a block of its own.
    """
    def key(layer: Layer) -> str:
        if blocks == "layers":
            return f"layer:{layer.short}"
        if blocks == "auto":
            return f"auto:{block_key(layer.short)}"
        for pattern in blocks:
            if fnmatch.fnmatchcase(layer.short, pattern):
                return f"glob:{pattern}"
        return f"layer:{layer.short}"

    grouped: list[tuple[str, list[Layer]]] = []
    for layer in layers:
        k = key(layer)
        if grouped and grouped[-1][0] == k:
            grouped[-1][1].append(layer)
        else:
            grouped.append((k, [layer]))
    return [members for _, members in grouped]


def plan_stages(layers: Sequence[Layer], head: int, frozen: set[str], *, probe_epochs: int,
                unfreeze_every: int | None, blocks: Any = "auto") -> list[Stage]:
    """The stages after the first (the head and what follows it train from the start).

    Linear probe alone: everything not ``frozen`` at epoch ``probe_epochs``. Gradual unfreezing: the
    ``k``-th block below the head (``group_blocks``) at epoch ``k·N`` — or, after a probe of ``P``
    epochs, at ``P + (k−1)·N`` (the probe is the first stage, of its own length). ``frozen`` layers
    never join.
    """
    below = [layer for layer in reversed(layers[:head])]
    stages: list[Stage] = []
    if unfreeze_every is None:
        names = [n for layer in below for n in layer.parameters if n not in frozen]
        if names and probe_epochs:
            stages.append(Stage(probe_epochs, names, [layer.name for layer in below
                                                      if any(n not in frozen for n in layer.parameters)]))
        return stages
    for k, block in enumerate(group_blocks(below, blocks), start=1):   # a frozen block's turn passes unused
        names = [n for layer in block for n in layer.parameters if n not in frozen]
        if not names:
            continue
        epoch = probe_epochs + (k - 1) * unfreeze_every if probe_epochs else k * unfreeze_every
        stages.append(Stage(epoch, names, [layer.name for layer in block
                                           if any(n not in frozen for n in layer.parameters)]))
    return stages


class UnfreezeSchedule:
    """A callback unfreezing ``stages`` on time; ``policies`` are the fine-tune's mode policies, re-applied when a
    layer unfreezes (it leaves eval mode then, unless a policy keeps part of it there)."""

    def __init__(self, stages: Sequence[Stage], *, settings: dict[str, Any], policies: Sequence[Any] = ()) -> None:
        self.stages = list(stages)
        self.settings = dict(settings)
        self.policies = tuple(policies)
        self.unfrozen_at: dict[int, list[str]] = {}  # epoch -> layers unfrozen then, in this process (for tests)

    def on_epoch_begin(self, state: Any, logs: dict[str, Any]) -> None:
        for stage in self.stages:
            if stage.epoch <= state.epoch:
                added = state.unfreeze(list(stage.names))
                if added:
                    self.unfrozen_at.setdefault(state.epoch, []).extend(stage.layers)
                    if state.model is not None:
                        release_unfrozen(state.model, stage.names, self.policies)

    def state_dict(self) -> dict[str, Any]:
        return {"transfer": self.settings}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("transfer")
        if saved != self.settings:
            changed = sorted(k for k in set(saved or {}) | set(self.settings)
                             if (saved or {}).get(k) != self.settings.get(k))
            raise ConfigError(f"the checkpoint was fine-tuned with other transfer settings (changed: "
                              f"{', '.join(changed)}); resume with the same settings, or start over with resume=False")

"""Which parameters a freeze selector means: layers by index, by name or by glob pattern.

The layers of a model, for transfer, are its ``top_level_layers`` that hold parameters
(``modelkeep.train.param_groups``), numbered from the input (0) to the head (-1 is the last);
the head is the layer that holds the head module's parameters. "Frozen" is ``requires_grad=False``,
the one notion the training loop knows. Imports torch and ``modelkeep.train``; never trains.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Iterable, Sequence

import torch

from ..errors import ConfigError
from ..train.param_groups import top_level_layers

__all__ = ["Layer", "layer_parameters", "select_parameters", "set_trainable", "transfer_layers"]


class Layer:
    """One transfer layer: its name prefix (``"layers.conv1"``), short name (``"conv1"``) and parameter names."""

    __slots__ = ("name", "short", "parameters")

    def __init__(self, name: str, parameters: Sequence[str]) -> None:
        self.name = name
        self.short = name.rsplit(".", 1)[-1] if name else name
        self.parameters = tuple(parameters)

    def __repr__(self) -> str:
        return f"Layer({self.name!r}, {len(self.parameters)} parameters)"


def layer_parameters(prefix: str, names: Iterable[str]) -> list[str]:
    return [n for n in names if prefix == "" or n == prefix or n.startswith(prefix + ".")]


def transfer_layers(model: torch.nn.Module) -> list[Layer]:
    """The model's top-level layers that hold parameters, input first (what indices and gradual unfreezing count)."""
    names = [name for name, _ in model.named_parameters()]
    layers = []
    for prefix, _ in top_level_layers(model):
        owned = layer_parameters(prefix, names)
        if owned:
            layers.append(Layer(prefix, owned))
    return layers


def head_index(layers: Sequence[Layer], head_parameters: Sequence[str]) -> int:
    """Index of the layer holding the head's parameters (the last one, if the head spans several)."""
    found = [i for i, layer in enumerate(layers) if set(layer.parameters) & set(head_parameters)]
    if not found:
        raise ConfigError("the head's parameters lie in no top-level layer of the model; name the head with "
                          "as_transferable(model, head='attribute')")
    return found[-1]


def _by_string(selector: str, layers: Sequence[Layer], names: Sequence[str]) -> list[str]:
    chosen: list[str] = []
    for layer in layers:
        if selector in (layer.name, layer.short) or fnmatch.fnmatchcase(layer.name, selector) \
                or fnmatch.fnmatchcase(layer.short, selector):
            chosen.extend(layer.parameters)
    for name in names:
        if name == selector or name.startswith(selector + ".") or fnmatch.fnmatchcase(name, selector) \
                or fnmatch.fnmatchcase(name, selector + ".*"):
            chosen.append(name)
    return chosen


def select_parameters(model: torch.nn.Module, selectors: Iterable[Any], *,
                      layers: Sequence[Layer] | None = None) -> list[str]:
    """Parameter names (model order) chosen by ``selectors``: ``int`` layer indices (negative from the head),
    layer names (``"conv1"`` or ``"layers.conv1"``) or glob patterns on layer or parameter names.
    A selector that chooses nothing is a ``ConfigError`` naming the layers there are."""
    layers = transfer_layers(model) if layers is None else layers
    names = [name for name, _ in model.named_parameters()]
    chosen: set[str] = set()
    for selector in selectors:
        if isinstance(selector, bool) or not isinstance(selector, (int, str)):
            raise ConfigError(f"a layer selector is an index, a name or a glob pattern, got {selector!r}")
        if isinstance(selector, int):
            if not -len(layers) <= selector < len(layers):
                raise ConfigError(f"layer index {selector} is out of range: the model has {len(layers)} layers "
                                  f"with parameters (0..{len(layers) - 1}, or -1 for the head)")
            hits = list(layers[selector].parameters)
        else:
            hits = _by_string(selector, layers, names)
        if not hits:
            shown = ", ".join(layer.short or "(model)" for layer in layers[:8]) + (", ..." if len(layers) > 8 else "")
            raise ConfigError(f"freeze selector {selector!r} matches no layer or parameter; layers are {shown}")
        chosen.update(hits)
    return [name for name in names if name in chosen]


def set_trainable(model: torch.nn.Module, names: Iterable[str], trainable: bool) -> list[str]:
    """``requires_grad_(trainable)`` on the named parameters; returns the names, in model order."""
    wanted = set(names)
    done = []
    for name, parameter in model.named_parameters():
        if name in wanted:
            parameter.requires_grad_(trainable)
            done.append(name)
    return done

"""Train/eval mode policies: which modules stay in eval mode while the model trains.

``model.train()`` puts every submodule in training mode, so a BatchNorm layer whose weights a user
froze still updates its running statistics — and a loop that switches to ``eval()`` for validation
and back to ``train()`` undoes any ``eval()`` the user set by hand. A ``ModePolicy`` is re-applied
by ``set_mode`` after every switch, so a frozen BatchNorm stays frozen across validation.
This module imports only torch, the standard library and ``modelkeep.errors``.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import torch

from ..errors import ConfigError

__all__ = ["FrozenBatchNorm", "KeepEval", "ModePolicy", "keep_user_eval", "set_mode"]

_BATCH_NORM = torch.nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d, SyncBatchNorm and the lazy ones


@runtime_checkable
class ModePolicy(Protocol):
    """Adjusts submodule modes after the model was switched to training (or evaluation) mode.

    Call order: the loop never calls ``model.train()``/``model.eval()`` itself; it calls
    ``set_mode(model, training, policies)`` at training start, after every validation and for
    every evaluation, which switches the whole model and then calls each policy's
    ``apply(model, training)`` in order. ``model`` is the unwrapped module.

    A worked example: keep every dropout off during training (deterministic fine-tuning):

    >>> class NoDropout(ModePolicy):
    ...     def apply(self, model, training):
    ...         for module in model.modules():
    ...             if isinstance(module, torch.nn.Dropout):
    ...                 module.eval()
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    >>> set_mode(model, True, [NoDropout()])
    >>> model.training, model[1].training
    (True, False)
    """

    def apply(self, model: torch.nn.Module, training: bool) -> None:
        ...


def set_mode(model: torch.nn.Module, training: bool, policies: Sequence[ModePolicy] = ()) -> None:
    """``model.train(training)``, then every policy's ``apply(model, training)``, in order."""
    model.train(training)
    for policy in policies:
        policy.apply(model, training)


class KeepEval:
    """Keeps chosen modules (and everything inside them) in eval mode while the model trains.

    ``patterns`` are glob patterns on module names (``model.named_modules()``, e.g. ``"layers.bn*"``);
    ``names`` exact names. With ``kinds``, only modules of those classes are kept. A pattern that
    matches no module is refused at the first ``apply`` (a typo would otherwise silently keep nothing).
    The kept names are the policy's state, so a checkpoint can carry them.

    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    >>> set_mode(model, True, [KeepEval(["1"])])
    >>> model[0].training, model[1].training
    (True, False)
    """

    def __init__(self, patterns: Iterable[str] = (), *, names: Iterable[str] = (),
                 kinds: tuple[type, ...] | None = None) -> None:
        self.patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
        self.names = frozenset((names,) if isinstance(names, str) else names)
        self.kinds = kinds

    def _chosen(self, name: str, module: torch.nn.Module) -> bool:
        if self.kinds is not None and not isinstance(module, self.kinds):
            return False
        return name in self.names or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def _check(self, model: torch.nn.Module) -> None:
        named = [(n, m) for n, m in model.named_modules() if self.kinds is None or isinstance(m, self.kinds)]
        for pattern in self.patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in named):
                shown = ", ".join(repr(n) for n, _ in named[:5]) or "none"
                raise ConfigError(f"{type(self).__name__}: pattern {pattern!r} matches no module "
                                  f"(candidates: {shown}); check the module names with model.named_modules()")

    def apply(self, model: torch.nn.Module, training: bool) -> None:
        if not training:
            return
        self._check(model)
        for name, module in model.named_modules():
            if self._chosen(name, module):
                module.eval()

    def state_dict(self) -> dict[str, Any]:
        return {"patterns": list(self.patterns), "names": sorted(self.names)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patterns, self.names = tuple(state["patterns"]), frozenset(state["names"])


class FrozenBatchNorm(KeepEval):
    """Keeps BatchNorm layers in eval mode while training: their running statistics do not move.

    ``patterns`` choose which (glob patterns on module names); without any, every BatchNorm layer.
    Their affine weights still train unless frozen too (``GroupRule(..., frozen=True)``).

    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    >>> set_mode(model, True, [FrozenBatchNorm()])
    >>> model[1].training
    False
    """

    def __init__(self, patterns: Iterable[str] = (), *, names: Iterable[str] = ()) -> None:
        patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
        super().__init__(patterns or ("*",), names=names, kinds=(_BATCH_NORM,))
        self._every = not patterns

    def _check(self, model: torch.nn.Module) -> None:
        if not self._every:  # "every BatchNorm" is not an error on a model that has none
            super()._check(model)


def keep_user_eval(model: torch.nn.Module) -> KeepEval:
    """The default policy, recorded at fit start: modules the user put in eval mode whose parameters are all frozen.

    A module qualifies when it is in eval mode now, has parameters of its own and none of them
    requires a gradient (a BatchNorm of a frozen backbone, say). Its running statistics then stay as
    they are, across validation too. Modules without parameters of their own (dropout, activations)
    never qualify, so a model that is merely in eval mode after loading trains as before.
    Call it before the loop's first ``set_mode``; later mode switches do not change what it keeps.

    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    >>> _ = model[1].requires_grad_(False).eval()
    >>> sorted(keep_user_eval(model).names)
    ['1']
    """
    kept = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not module.training and own and not any(p.requires_grad for p in own):
            kept.append(name)
    return KeepEval(names=kept)

"""The callback protocol, and early stopping.

A callback defines any of the hooks below; each receives the ``LoopState``
(counters, the model, a stop flag) and the latest logs — never the trainer.
Call order in one run::

    on_train_begin
    for each epoch:  on_epoch_begin, then per optimizer step on_step_end,
                     (on_validation_end after each validation), on_epoch_end
    on_train_end     (before the single test evaluation)

Setting ``state.stop_training = True`` in any hook ends training after that hook.
A callback that holds state across steps exposes ``state_dict()`` and
``load_state_dict()`` (the ``Stateful`` protocol of ``modelkeep.checkpoint.state``)
so that a checkpoint can save and restore it.

Example::

    class PrintLearningRate:
        def on_epoch_end(self, state, logs):
            print(state.epoch, logs["lr"])
"""
from __future__ import annotations

import math
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from ..checkpoint.state import Stateful
from .._overrides import shorten_value
from ..errors import ConfigError
from .metrics import LOWER_IS_BETTER

__all__ = ["Callback", "CallbackList", "EarlyStopping", "HOOKS", "Stateful", "make_early_stopping"]


@runtime_checkable
class Callback(Protocol):
    """Hooks a callback may define (all optional); ``logs`` values are floats, except ``on_step_end``'s
    ``loss``, a 0-d device tensor (read it with ``float()`` only when needed: that waits for the device)."""

    def on_epoch_end(self, state: Any, logs: dict[str, float]) -> None: ...


HOOKS = ("on_train_begin", "on_epoch_begin", "on_step_end", "on_validation_end", "on_epoch_end", "on_train_end")


class CallbackList:
    """Dispatches each hook to the callbacks that define it (hooks nobody defines cost nothing)."""

    def __init__(self, callbacks: Sequence[Any]) -> None:
        self.callbacks = list(callbacks)
        self.hooks = {name: [getattr(c, name) for c in self.callbacks if callable(getattr(c, name, None))]
                      for name in HOOKS}

    def has(self, hook: str) -> bool:
        return bool(self.hooks[hook])

    def __call__(self, hook: str, state: Any, logs: dict[str, Any]) -> None:
        for function in self.hooks[hook]:
            function(state, logs)


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` validations.

    With ``restore_best_weights`` (the default), the weights of the best validation
    are put back at the end of training, whether or not training stopped early,
    so the test evaluation and the saved file use the best model.
    """

    def __init__(self, monitor: str = "val_loss", *, patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True) -> None:
        if patience < 0:
            raise ConfigError(f"early stopping patience must be at least 0, got {patience}")
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"early stopping mode must be 'auto', 'min' or 'max', got {shorten_value(mode)}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.lower_is_better = (monitor.removeprefix("val_") in LOWER_IS_BETTER) if mode == "auto" else mode == "min"
        self.restore_best_weights = restore_best_weights
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_epoch: int | None = None
        self.waited = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        if self.lower_is_better:
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_validation_end(self, state: Any, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ConfigError(f"early stopping monitors {self.monitor!r}, which is not among {sorted(logs)}; "
                              "give validation data or monitor another value")
        value = float(logs[self.monitor])
        if self.improved(value):
            self.best, self.best_step, self.best_epoch, self.waited = value, state.step, state.epoch, 0
            if self.restore_best_weights and state.model is not None:
                self.best_weights = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
            return
        self.waited += 1
        if self.waited > self.patience:
            state.stop_training = True
            self.stopped_epoch = state.epoch

    def on_train_end(self, state: Any, logs: dict[str, float]) -> None:
        if self.restore_best_weights and self.best_weights is not None and state.model is not None:
            state.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "best_epoch": self.best_epoch,
                "waited": self.waited, "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.best_epoch = state["best"], state["best_step"], state["best_epoch"]
        self.waited, self.stopped_epoch = int(state["waited"]), state["stopped_epoch"]
        self.best_weights = state.get("best_weights")


def make_early_stopping(config: Any) -> EarlyStopping | None:
    """``None``/False, ``True`` (defaults), an int patience, a dict of ``EarlyStopping`` options, or one."""
    if config in (None, False):
        return None
    if isinstance(config, EarlyStopping):
        return config
    if config is True:
        return EarlyStopping()
    if isinstance(config, int):
        return EarlyStopping(patience=config)
    if not isinstance(config, dict):
        raise ConfigError(f"early_stopping must be true/false, a patience or an object, got {shorten_value(config)}")
    options = dict(config)
    if options.pop("enabled", True) is False:
        return None
    try:
        return EarlyStopping(**options)
    except TypeError as exc:
        raise ConfigError(f"early_stopping: {exc}") from None

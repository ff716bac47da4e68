"""Learning-rate schedules: step, exponential, cosine, one-cycle, linear warm-up, reduce-on-plateau.

Every schedule except reduce-on-plateau is a pure function of the global step
(``multiplier(step)``, times each group's base learning rate), so resuming at a
step needs nothing but the step. Reduce-on-plateau depends on the validation
history; its counters live in ``state_dict()``. ``fit`` calls ``apply`` just
before each optimizer step and ``on_validation_end`` after each validation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .._registry import Registry
from .._overrides import shorten_value
from ..errors import ConfigError
from .metrics import LOWER_IS_BETTER

SCHEDULES: Registry[type] = Registry("schedule", ConfigError)


@dataclass
class Schedule:
    """Base: constant learning rate, with an optional linear warm-up over ``warmup_steps`` (or ``warmup_epochs``)."""

    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    steps_per_epoch: int = field(default=1, init=False)
    total_steps: int = field(default=1, init=False)
    base_lrs: list[float] = field(default_factory=list, init=False)

    def start(self, optimizer: Any, *, steps_per_epoch: int, total_steps: int) -> None:
        """Called once before training with the optimizer and the run's length in optimizer steps."""
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = max(1, total_steps)
        self.base_lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
        for group, base in zip(optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = base
        if self.warmup_epochs and not self.warmup_steps:
            self.warmup_steps = int(round(self.warmup_epochs * self.steps_per_epoch))

    def decay(self, step: int) -> float:
        """The schedule's own factor at ``step`` (0-based, counted after the warm-up)."""
        return 1.0

    def multiplier(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.decay(step - self.warmup_steps)

    def apply(self, optimizer: Any, step: int) -> None:
        groups = optimizer.param_groups
        if len(groups) > len(self.base_lrs):  # groups added since start (parameters unfrozen mid-run)
            self.base_lrs += [group.get("initial_lr", group["lr"]) for group in groups[len(self.base_lrs):]]
        factor = self.multiplier(step) * self.extra_factor()
        for group, base in zip(optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def extra_factor(self) -> float:
        return 1.0

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def on_validation_end(self, logs: dict[str, float]) -> None:
        """Stateless schedules ignore validation results."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: nothing to restore."""


@SCHEDULES.register("constant", aliases=("none",))
@dataclass
class Constant(Schedule):
    pass


@SCHEDULES.register("warmup", aliases=("linear_warmup",))
@dataclass
class Warmup(Schedule):
    """Linear warm-up from ``lr/warmup_steps`` to ``lr`` (reached at the last warm-up step), then constant (default: one epoch of warm-up)."""

    def start(self, optimizer: Any, *, steps_per_epoch: int, total_steps: int) -> None:
        if not self.warmup_steps and not self.warmup_epochs:
            self.warmup_epochs = 1.0
        super().start(optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps)


@SCHEDULES.register("step")
@dataclass
class StepDecay(Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

    step_size: int = 10
    gamma: float = 0.1

    def decay(self, step: int) -> float:
        return self.gamma ** (self.epoch_of(step) // max(1, self.step_size))


@SCHEDULES.register("exponential")
@dataclass
class Exponential(Schedule):
    """Multiply the learning rate by ``gamma`` every epoch."""

    gamma: float = 0.95

    def decay(self, step: int) -> float:
        return self.gamma ** self.epoch_of(step)


@SCHEDULES.register("cosine")
@dataclass
class Cosine(Schedule):
    """Cosine annealing per step from ``lr`` to ``lr * min_factor`` at the end of training."""

    min_factor: float = 0.0

    def decay(self, step: int) -> float:
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, step / span)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULES.register("one_cycle", aliases=("onecycle",))
@dataclass
class OneCycle(Schedule):
    """Smith's one-cycle policy (as ``torch.optim.lr_scheduler.OneCycleLR``, cosine): from ``lr/div_factor``
    up to ``lr`` over ``pct_start`` of training, then down to ``lr/(div_factor*final_div_factor)``."""

    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def decay(self, step: int) -> float:
        total = max(1, self.total_steps - self.warmup_steps)
        peak = max(1.0, self.pct_start * total - 1)
        start, low = 1.0 / self.div_factor, 1.0 / (self.div_factor * self.final_div_factor)

        def cosine(a: float, b: float, fraction: float) -> float:
            return b + (a - b) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, fraction))))

        if step <= peak:
            return cosine(start, 1.0, step / peak)
        return cosine(1.0, low, (step - peak) / max(1.0, total - 1 - peak))


@SCHEDULES.register("reduce_on_plateau", aliases=("plateau", "reduce_lr_on_plateau"))
@dataclass
class ReduceOnPlateau(Schedule):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience`` validations."""

    monitor: str = "val_loss"
    mode: str = "auto"
    factor: float = 0.1
    patience: int = 5
    threshold: float = 1e-4
    cooldown: int = 0
    min_factor: float = 0.0
    scale: float = field(default=1.0, init=False)
    best: float | None = field(default=None, init=False)
    bad_validations: int = field(default=0, init=False)
    cooldown_left: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.factor < 1:
            raise ConfigError(f"reduce_on_plateau factor must be between 0 and 1, got {self.factor}")

    def extra_factor(self) -> float:
        return self.scale

    def _lower_is_better(self) -> bool:
        if self.mode == "auto":
            return self.monitor.removeprefix("val_") in LOWER_IS_BETTER
        return self.mode == "min"

    def on_validation_end(self, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ConfigError(f"reduce_on_plateau monitors {self.monitor!r}, which is not among {sorted(logs)}")
        value = float(logs[self.monitor])
        lower = self._lower_is_better()
        improved = self.best is None or (
            value < self.best * (1 - self.threshold) if lower and self.best > 0 else
            value < self.best - abs(self.best) * self.threshold if lower else
            value > self.best + abs(self.best) * self.threshold)
        if improved:
            self.best, self.bad_validations = value, 0
        else:
            self.bad_validations += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_validations = 0
        if self.bad_validations > self.patience:
            self.scale = max(self.scale * self.factor, self.min_factor)
            self.cooldown_left, self.bad_validations = self.cooldown, 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best": self.best, "bad_validations": self.bad_validations,
                "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.best = state["best"]
        self.bad_validations = int(state["bad_validations"])
        self.cooldown_left = int(state["cooldown_left"])


def make_schedule(config: Any) -> Schedule | None:
    """A schedule from ``None``, a name (``"cosine"``) or a dict (``{"type": "step", "step_size": 5}``)."""
    if config in (None, False, "none", "constant"):
        return None
    if isinstance(config, Schedule):
        return config
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, dict) or "type" not in config:
        raise ConfigError(f"schedule must be a name or an object with a 'type', got {shorten_value(config)}")
    cls = SCHEDULES.get(config["type"])
    options = {k: v for k, v in config.items() if k != "type"}
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"schedule {config['type']!r}: {exc}") from None

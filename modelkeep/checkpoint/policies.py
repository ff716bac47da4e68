"""When to save and which checkpoints to keep: small objects that compose.

Triggers answer ``should_save(event) -> bool`` for a ``SaveEvent`` (the
position, the latest metrics, whether the event is an epoch end). Retention
policies answer ``select(checkpoints) -> set of names to keep``. Combine them
with ``AnyOf`` and ``KeepUnion``::

    save_on = AnyOf(EveryNSteps(500), EveryNSeconds(600), OnBestMetric("val_loss"))
    keep = KeepUnion(KeepLastN(3), KeepBestN(1, "val_loss"), KeepEveryNth(10_000))

A trigger with state that must survive a resume (``OnBestMetric`` remembers the
best value) offers ``state_dict``/``load_state_dict``; the manager stores it in
every checkpoint. A trigger may also define ``saved(event)``, called after each
save whatever fired it (``EveryNSeconds`` restarts its clock there).

Whatever a policy selects, the manager never deletes the newest verified
checkpoint. Nothing here touches a file.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from ..errors import ConfigError
from .state import Position


@dataclass(frozen=True)
class SaveEvent:
    """What a trigger looks at: a step ended (``epoch_end=False``) or an epoch's end-of-epoch work did."""

    position: Position
    metrics: Mapping[str, float] = field(default_factory=dict)
    epoch_end: bool = False
    time: float = field(default_factory=time.monotonic)


class Trigger(Protocol):
    """Decides whether a checkpoint is due. Example::

        class AtSteps:
            def __init__(self, *steps): self.steps = set(steps)
            def should_save(self, event): return not event.epoch_end and event.position.step in self.steps
    """

    def should_save(self, event: SaveEvent) -> bool: ...


class CheckpointRecord(Protocol):
    """What a retention policy sees of a checkpoint (``CheckpointInfo`` satisfies it)."""

    name: str
    step: int
    metrics: Mapping[str, Any]


class Retention(Protocol):
    """Chooses the checkpoints to keep; every other one may be deleted. Example::

        class KeepFirst:
            def select(self, checkpoints): return {min(checkpoints, key=lambda c: c.step).name} if checkpoints else set()
    """

    def select(self, checkpoints: Sequence[CheckpointRecord]) -> set[str]: ...


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")


def _check_mode(mode: str) -> None:
    if mode not in ("min", "max"):
        raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")


# --------------------------------------------------------------------------- triggers


@dataclass
class EveryNSteps:
    """Save after every ``n``-th optimizer step."""

    n: int

    def __post_init__(self) -> None:
        _positive("EveryNSteps(n)", self.n)

    def should_save(self, event: SaveEvent) -> bool:
        return not event.epoch_end and event.position.step % self.n == 0


@dataclass
class EveryNEpochs:
    """Save after the end-of-epoch work of every ``n``-th epoch."""

    n: int = 1

    def __post_init__(self) -> None:
        _positive("EveryNEpochs(n)", self.n)

    def should_save(self, event: SaveEvent) -> bool:
        return event.epoch_end and event.position.epoch % self.n == 0


@dataclass
class EveryNSeconds:
    """Save when ``seconds`` have passed since the last save (or since training started)."""

    seconds: float
    _last: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _positive("EveryNSeconds(seconds)", self.seconds)

    def should_save(self, event: SaveEvent) -> bool:
        if self._last is None:
            self._last = event.time
        return event.time - self._last >= self.seconds

    def saved(self, event: SaveEvent) -> None:
        self._last = event.time


@dataclass
class OnBestMetric:
    """Save when ``metric`` (present in the event's metrics) improves on its best so far by more than ``min_delta``."""

    metric: str
    mode: str = "min"
    min_delta: float = 0.0
    best: float | None = None

    def __post_init__(self) -> None:
        _check_mode(self.mode)

    def should_save(self, event: SaveEvent) -> bool:
        value = event.metrics.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return False
        value = float(value)
        improved = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if improved:
            self.best = value
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = state.get("best")


class AnyOf:
    """Save when any of ``triggers`` fires (each one is asked, so every trigger sees every event)."""

    def __init__(self, *triggers: Trigger) -> None:
        if not triggers:
            raise ConfigError("AnyOf() needs at least one trigger")
        self.triggers = triggers

    def __repr__(self) -> str:
        return f"AnyOf({', '.join(map(repr, self.triggers))})"

    def should_save(self, event: SaveEvent) -> bool:
        return any([trigger.should_save(event) for trigger in self.triggers])  # a list: no short-circuit

    def saved(self, event: SaveEvent) -> None:
        for trigger in self.triggers:
            hook = getattr(trigger, "saved", None)
            if hook is not None:
                hook(event)

    def state_dict(self) -> dict[str, Any]:
        return {str(i): t.state_dict() for i, t in enumerate(self.triggers) if hasattr(t, "state_dict")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for i, trigger in enumerate(self.triggers):
            if str(i) in state and hasattr(trigger, "load_state_dict"):
                trigger.load_state_dict(state[str(i)])


# --------------------------------------------------------------------------- retention


@dataclass
class KeepLastN:
    """Keep the ``n`` checkpoints with the highest steps."""

    n: int

    def __post_init__(self) -> None:
        _positive("KeepLastN(n)", self.n)

    def select(self, checkpoints: Sequence[CheckpointRecord]) -> set[str]:
        return {c.name for c in sorted(checkpoints, key=lambda c: c.step)[-self.n:]}


@dataclass
class KeepBestN:
    """Keep the ``n`` checkpoints with the best ``metric`` (ties go to the later step)."""

    n: int
    metric: str
    mode: str = "min"

    def __post_init__(self) -> None:
        _positive("KeepBestN(n)", self.n)
        _check_mode(self.mode)

    def select(self, checkpoints: Sequence[CheckpointRecord]) -> set[str]:
        scored = [c for c in checkpoints if _finite(c.metrics.get(self.metric))]
        sign = 1.0 if self.mode == "min" else -1.0
        scored.sort(key=lambda c: (sign * float(c.metrics[self.metric]), -c.step))
        return {c.name for c in scored[:self.n]}


@dataclass
class KeepEveryNth:
    """Keep every checkpoint whose step is a multiple of ``n`` (long-term snapshots)."""

    n: int

    def __post_init__(self) -> None:
        _positive("KeepEveryNth(n)", self.n)

    def select(self, checkpoints: Sequence[CheckpointRecord]) -> set[str]:
        return {c.name for c in checkpoints if c.step % self.n == 0}


class KeepUnion:
    """Keep what any of ``policies`` keeps."""

    def __init__(self, *policies: Retention) -> None:
        if not policies:
            raise ConfigError("KeepUnion() needs at least one policy")
        self.policies = policies

    def __repr__(self) -> str:
        return f"KeepUnion({', '.join(map(repr, self.policies))})"

    def select(self, checkpoints: Sequence[CheckpointRecord]) -> set[str]:
        kept: set[str] = set()
        for policy in self.policies:
            kept |= policy.select(checkpoints)
        return kept


@dataclass
class KeepAll:
    """Never delete anything."""

    def select(self, checkpoints: Sequence[CheckpointRecord]) -> set[str]:
        return {c.name for c in checkpoints}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def find_monitor(*policies: Any) -> tuple[str, str] | None:
    """The first ``(metric, mode)`` named by a trigger or retention policy, looking inside combinations."""
    for policy in policies:
        metric, mode = getattr(policy, "metric", None), getattr(policy, "mode", None)
        if isinstance(metric, str) and mode in ("min", "max"):
            return metric, mode
        inner = getattr(policy, "triggers", None) or getattr(policy, "policies", None)
        if inner:
            found = find_monitor(*inner)
            if found:
                return found
    return None

"""Checkpointing inside ``fit``: the one object the training loop calls at its step and epoch boundaries.

``fit(..., checkpoint=DIR)`` builds a ``CheckpointManager`` from ``CheckpointSettings``
(or takes one ready-made) and wraps it in ``_Checkpointing``, which

* before the loop, restores the newest checkpoint that verifies (``resume=True``) into the
  model, the optimizer's parameter-group layout, optimizer, schedule, scaler, stateful
  callbacks (early stopping with its best weights) and regularizers, every random state
  and the loop's own state (position, epoch-loss accumulator, histories), after checking
  that the checkpoint was written by a run with the same settings (``FitSettings.fingerprint``);
* after each optimizer step, asks the trigger (no host sync: a few Python comparisons)
  and saves when one is due or when SIGTERM/SIGINT arrived; on a signal it waits for the
  save to be committed and raises ``TrainingInterrupted``, which says how to resume;
* after each epoch's end-of-epoch work (validation, callbacks), saves with the epoch's
  metrics when due, and always at the end of training;
* before anything that writes weights or optimizer state (the optimizer step, callbacks),
  ``before_update`` fences: an asynchronous save copies the parameters and optimizer
  state on its background thread, and they must not change until it has (an Event check
  when nothing is pending).

Saving never changes a number of the training (it only reads state), so where and how
often checkpoints are taken does not change the final weights. This module never
writes a file itself: the manager does, through the storage backend.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..checkpoint.storage import PREVIOUS, set_aside_checkpoints
from .._overrides import shorten_value
from ..errors import CheckpointError, ConfigError, TrainingInterrupted
from .progress import describe_position

__all__ = ["CheckpointSettings", "set_aside_checkpoints"]

RESTART_HINT = ("to start over instead, run `modelkeep train` with --restart or call fit(..., resume=False) "
                f"(both move the old checkpoints into {PREVIOUS}/)")


@dataclass(frozen=True)
class CheckpointSettings:
    """When ``fit`` saves checkpoints, which it keeps, and how it writes them (the config's ``checkpoint:`` section).

    Saves happen every ``every_steps`` optimizer steps, at the end of every
    ``every_epochs``-th epoch, every ``every_seconds`` seconds and whenever
    ``monitor`` improves (``None`` turns a trigger off), and always at the end of
    training. The last ``keep_last`` checkpoints and the ``keep_best`` best by
    ``monitor`` are kept. ``asynchronous`` writes on a background thread;
    ``on_error`` is ``"stop"`` (a failed save stops training with
    ``CheckpointError``) or ``"continue"`` (warn and go on); ``durable=False``
    skips fsync (faster; safe against a killed process, not against a power cut).
    """

    directory: str | None = None
    enabled: bool = True
    every_steps: int | None = 500
    every_epochs: int | None = 1
    every_seconds: float | None = None
    keep_last: int = 3
    keep_best: int = 1
    monitor: str | None = "val_loss"
    mode: str = "auto"
    asynchronous: bool = True
    on_error: str = "stop"
    durable: bool = True

    def __post_init__(self) -> None:
        for name in ("every_steps", "every_epochs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"checkpoint.{name} must be a positive integer or null, got {shorten_value(value)}")
        if self.every_seconds is not None and not (isinstance(self.every_seconds, (int, float))
                                                   and self.every_seconds > 0):
            raise ConfigError(f"checkpoint.every_seconds must be a positive number or null, got {shorten_value(self.every_seconds)}")
        for name in ("keep_last", "keep_best"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"checkpoint.{name} must be a whole number (0 or more), got {shorten_value(value)}")
        if self.keep_last < 1:
            raise ConfigError("checkpoint.keep_last must be at least 1: the newest checkpoint is what a resume needs")
        if self.mode not in ("auto", "min", "max"):
            raise ConfigError(f"checkpoint.mode must be 'auto', 'min' or 'max', got {shorten_value(self.mode)}")
        if self.on_error not in ("stop", "continue"):
            raise ConfigError(f"checkpoint.on_error must be 'stop' or 'continue', got {shorten_value(self.on_error)}")
        for name in ("enabled", "asynchronous", "durable"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"checkpoint.{name} must be true or false, got {shorten_value(getattr(self, name))}")

    @classmethod
    def from_config(cls, value: Any, *, directory: str | os.PathLike[str] | None = None) -> "CheckpointSettings":
        """From a config value: ``None``/``True`` (the defaults), ``False`` (off) or a mapping of the fields above."""
        if value is None or value is True:
            value = {}
        elif value is False:
            value = {"enabled": False}
        if not isinstance(value, Mapping):
            raise ConfigError(f"checkpoint must be true/false or a mapping of settings, got {shorten_value(value)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"unknown checkpoint setting(s) {unknown}; known: {sorted(known - {'directory'})}")
        options = dict(value)
        if directory is not None and options.get("directory") is None:
            options["directory"] = str(directory)
        return cls(**options)

    def monitor_mode(self) -> str:
        if self.mode != "auto" or self.monitor is None:
            return self.mode
        from .metrics import LOWER_IS_BETTER

        return "min" if self.monitor.removeprefix("val_") in LOWER_IS_BETTER else "max"

    def manager(self, *, storage: Any = None, reader: bool = False):
        """The ``CheckpointManager`` these settings describe; ``reader`` for a process that only restores
        (not the coordinator of several: ``ReadOnlyCheckpoints``, no folder lock, nothing removed)."""
        from ..checkpoint.manager import CheckpointManager
        from ..checkpoint.policies import (AnyOf, EveryNEpochs, EveryNSeconds, EveryNSteps, KeepBestN, KeepLastN,
                                           KeepUnion, OnBestMetric)

        if self.directory is None:
            raise ConfigError("checkpointing needs a folder: pass checkpoint=DIR to fit()")
        triggers: list[Any] = []
        if self.every_steps:
            triggers.append(EveryNSteps(self.every_steps))
        if self.every_epochs:
            triggers.append(EveryNEpochs(self.every_epochs))
        if self.every_seconds:
            triggers.append(EveryNSeconds(float(self.every_seconds)))
        keep: list[Any] = [KeepLastN(self.keep_last)]
        if self.monitor and self.keep_best:
            triggers.append(OnBestMetric(self.monitor, self.monitor_mode()))
            keep.append(KeepBestN(self.keep_best, self.monitor, self.monitor_mode()))
        if not triggers:  # only the final save: still a trigger object the manager can ask
            triggers.append(EveryNEpochs(2**62))
        if reader:
            from ..checkpoint.storage import checkpoint_storage

            from .multiprocess_checkpoints import ReadOnlyCheckpoints

            storage = ReadOnlyCheckpoints(storage if storage is not None else checkpoint_storage(self.directory))
        return CheckpointManager(self.directory, save_on=AnyOf(*triggers), keep=KeepUnion(*keep),
                                 asynchronous=self.asynchronous, on_error=self.on_error, durable=self.durable,
                                 storage=storage)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_fingerprint(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide the numbers of a run, as plain JSON values (compared on resume)."""
    return json.loads(json.dumps(settings, sort_keys=True, default=repr))


def architecture_digest(model: Any) -> str:
    """A hash of the model's structure: its spec when it has one, else its parameter names, shapes and dtypes."""
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "to_dict"):
        text = json.dumps(spec.to_dict(), sort_keys=True, default=repr)
    else:
        text = json.dumps([[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()])
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class _NoCheckpoints:
    """The loop's checkpointing when none was asked for: every boundary costs one empty method call."""

    def __enter__(self) -> "_NoCheckpoints":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def step_end(self, run: Any) -> None:
        pass

    def before_update(self) -> None:
        pass

    def epoch_end(self, run: Any, logs: Mapping[str, Any], *, last: bool) -> None:
        pass


class OptimizerLayout:
    """The optimizer's parameter groups as a checkpoint carries them (a ``CheckpointState.structure`` entry).

    Restored before the optimizer's own state: groups added mid-run (parameters unfrozen
    with ``ParameterGroups.add_to``) are added again first, so the saved state finds them.
    """

    def __init__(self, groups: Any, optimizer: Any) -> None:
        self.groups, self.optimizer = groups, optimizer

    def state_dict(self) -> dict[str, Any]:
        return self.groups.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.groups.load_state_dict(state)
        self.groups.add_missing_to(self.optimizer)


class _Checkpointing:
    """Adapts ``fit``'s loop (``loop.TrainingLoop``) to a ``CheckpointManager`` (see the module docstring for the
    call order).

    ``callbacks`` are the run's stateful objects (callbacks, regularizers) by stable name;
    ``structure`` what shapes the optimizer (``OptimizerLayout``); ``fingerprint`` the
    settings a resume must match; ``pieces`` the manifest pieces ``export-checkpoint``
    needs to make a release file from a checkpoint. With several processes only the
    strategy's coordinator writes, between two barriers; every process restores.
    """

    def __init__(self, manager: Any, run: Any, *, callbacks: Mapping[str, Any], fingerprint: Mapping[str, Any],
                 pieces: Mapping[str, Any] | None, structure: Mapping[str, Any] | None = None,
                 strategy: Any = None) -> None:
        from ..checkpoint.state import CheckpointState

        self.manager = manager
        self.run = run
        self.fingerprint = dict(fingerprint)
        self.pieces = dict(pieces) if pieces else None
        self.state = CheckpointState(run.model, run.optimizer, run.schedule, run.scaler, callbacks=dict(callbacks),
                                     structure=dict(structure or {}))
        self.strategy = strategy
        self.sharded: Any = None  # the state split across processes (FSDP2): sharded checkpoints, collective
        if strategy is not None and not getattr(strategy, "replicated", True):
            from .multiprocess_checkpoints import ShardedCheckpoints

            self.sharded = ShardedCheckpoints(self.directory, manager)
        self.guard: Any = None
        self.restored: Any = None

    @property
    def directory(self) -> str:
        return str(getattr(self.manager.storage, "location", self.manager.directory))

    # ------------------------------------------------------------------ before the loop

    def restore(self) -> Any:
        """Load the newest good checkpoint into the run; None (a fresh start) when the folder has none."""
        if self.sharded is not None:
            self.restored = self.sharded.restore(self)
            return self.restored
        try:
            restored = self.manager.restore(self.state)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; {RESTART_HINT}") from None
        except (ValueError, KeyError, RuntimeError) as exc:  # an optimizer or callback that does not fit
            raise CheckpointError(f"the checkpoint in {self.directory} does not fit this run: {exc}; "
                                  f"{RESTART_HINT}") from None
        if restored is None:
            from .multiprocess_checkpoints import refuse_sharded_only

            refuse_sharded_only(self.directory)  # FSDP2's checkpoints are not a fresh start
            return None
        extra = restored.extra if isinstance(restored.extra, dict) else {}
        saved = extra.get("run")
        if saved != self.fingerprint:
            differences = _differences(saved if isinstance(saved, dict) else {}, self.fingerprint)
            raise CheckpointError(
                f"the checkpoints in {self.directory} were written by a run with other settings "
                f"({differences}); resuming would mix two runs. Use the same settings to resume; "
                f"{RESTART_HINT}"
            )
        self.run.load_loop_state(restored.position, extra.get("loop", {}))
        self.run.state.resumed_from = restored.info.name
        self.restored = restored
        return restored

    # ------------------------------------------------------------------ around the loop

    def __enter__(self) -> "_Checkpointing":
        from ..checkpoint.signals import SignalGuard

        self.guard = SignalGuard().install()
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        try:
            self.manager.__exit__(exc_type, exc, traceback)  # waits for the save in flight (reports it if clean)
        finally:
            self.guard.uninstall()

    # ------------------------------------------------------------------ at the boundaries

    def before_update(self) -> None:
        """Before the loop writes weights or optimizer state: wait for a deferred snapshot copy (if any)."""
        fence = getattr(self.manager, "fence", None)
        if fence is not None:
            fence()

    def step_end(self, run: Any) -> None:
        """After an optimizer step (the only place a checkpoint inside an epoch may be taken)."""
        state = run.state
        if state.stop_training:  # the epoch's end-of-epoch work follows at once; it saves (and stops) there
            return
        from ..checkpoint.state import Position

        position = Position(state.epoch, state.batch, state.step)
        due, interrupted = self._agreed(self.manager.should_save(position), self.guard.requested is not None)
        if due or interrupted:
            name = self._save(position)
            if interrupted:
                self._interrupted(name, position)

    def epoch_end(self, run: Any, logs: Mapping[str, Any], *, last: bool) -> None:
        """After an epoch's validation and callbacks; ``last`` when training ends after this epoch."""
        from ..checkpoint.state import Position

        state = run.state
        position = Position(state.epoch, 0, state.step)
        due, interrupted = self._agreed(self.manager.should_save(position, metrics=logs, epoch_end=True),
                                        self.guard.requested is not None)
        if due or last or interrupted:
            name = self._save(position, metrics=logs)
            if interrupted and not last:
                self._interrupted(name, position)

    def _agreed(self, due: bool, interrupted: bool) -> tuple[bool, bool]:
        """With several processes, save (or stop) when any of them would: a time trigger or a signal may
        reach one process a step before the others, and a save is collective."""
        if self.strategy is None or self.strategy.world_size == 1:
            return due, interrupted
        from .strategy import any_process

        due, interrupted = any_process(self.strategy, due, interrupted)
        return due, interrupted

    def _save(self, position: Any, *, metrics: Mapping[str, Any] | None = None) -> str | None:
        strategy = self.strategy
        if strategy is None:
            return self._write(position, metrics)
        self.run.share_epoch_loss()  # collective: the checkpoint holds the global batches' losses
        if self.sharded is not None:
            return self.sharded.save(self, position, metrics)  # every process writes its part
        strategy.barrier()  # every process is at this position before the coordinator captures it
        name = self._write(position, metrics) if strategy.is_coordinator else None
        strategy.barrier()
        return name

    def _write(self, position: Any, metrics: Mapping[str, Any] | None) -> str | None:
        run = self.run
        return self.manager.save(self.state, position, metrics=metrics, history=run.history.to_dict(),
                                 extra={"run": self.fingerprint, "loop": run.loop_state()},
                                 extra_manifest=self.pieces)

    def _interrupted(self, name: str | None, position: Any) -> None:
        self.manager.close()  # the checkpoint is committed before anyone is told to resume from it
        guard = self.guard
        where = describe_position(position.epoch, position.batch, position.step)
        signal = guard.requested or "a signal to another process"
        saved = (f"checkpoint {name} saved in {self.directory}" if name
                 else f"the checkpoint could not be saved; the previous one in {self.directory} is intact")
        raise TrainingInterrupted(
            f"training stopped on {signal} at {where}; {saved}. Run the same training again "
            f"(fit(..., checkpoint={self.directory!r}, resume=True), or the same `modelkeep train` command) "
            "to resume",
            checkpoint=name, directory=self.directory, signal=guard.requested,
            exit_code=guard.exit_code or 128 + 15)  # another process's SIGTERM stopped this one too


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    keys = sorted(set(saved) | set(current))
    changed = [f"{key}: {_short(saved.get(key))} -> {_short(current.get(key))}"
               for key in keys if saved.get(key) != current.get(key)]
    return "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")


def _short(value: Any) -> str:
    text = json.dumps(value, default=repr) if not (isinstance(value, float) and not math.isfinite(value)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

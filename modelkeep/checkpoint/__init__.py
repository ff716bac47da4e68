"""Checkpoints that never lose work: a manager, an atomic committer and a storage backend.

* ``manager.CheckpointManager`` decides when to save (triggers), what to keep
  (retention) and what to resume from (the newest checkpoint that verifies);
* ``atomic.atomic_write`` commits every file: temporary name, fsync, rename,
  fsync of the folder; ``clean_leftovers`` removes what a crash left;
* ``storage.LocalStorage`` (behind the ``CheckpointStorage`` protocol) holds the files.

What a checkpoint holds is captured by ``state.capture``; asynchronous saves
copy it into ``snapshot.SnapshotBuffers`` and write it on a background thread.
``SignalGuard`` turns SIGTERM/SIGINT into a checkpoint and a clean exit.

Names are imported on first use, so ``atomic`` (which ``artifact.tensors``
needs) never drags in the rest.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "atomic_write": "atomic", "clean_leftovers": "atomic",
    "export_checkpoint": "export", "list_checkpoints": "export", "manifest_pieces": "export",
    "select_checkpoint": "export",
    "CheckpointInfo": "manager", "CheckpointManager": "manager", "CheckpointWarning": "manager",
    "Restored": "manager", "describe_checkpoint": "manager", "read_checkpoint": "manager",
    "AnyOf": "policies", "EveryNEpochs": "policies", "EveryNSeconds": "policies", "EveryNSteps": "policies",
    "KeepAll": "policies", "KeepBestN": "policies", "KeepEveryNth": "policies", "KeepLastN": "policies",
    "KeepUnion": "policies", "OnBestMetric": "policies", "Retention": "policies", "SaveEvent": "policies",
    "Trigger": "policies",
    "SignalGuard": "signals",
    "SnapshotBuffers": "snapshot",
    "Position": "state", "Stateful": "state", "TrainingState": "state", "capture_rng": "state",
    "restore_rng": "state",
    "CheckpointStorage": "storage", "LocalStorage": "storage",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from .atomic import atomic_write, clean_leftovers
    from .export import export_checkpoint, list_checkpoints, manifest_pieces, select_checkpoint
    from .manager import (CheckpointInfo, CheckpointManager, CheckpointWarning, Restored, describe_checkpoint,
                          read_checkpoint)
    from .policies import (AnyOf, EveryNEpochs, EveryNSeconds, EveryNSteps, KeepAll, KeepBestN, KeepEveryNth,
                           KeepLastN, KeepUnion, OnBestMetric, Retention, SaveEvent, Trigger)
    from .signals import SignalGuard
    from .snapshot import SnapshotBuffers
    from .state import Position, Stateful, TrainingState, capture_rng, restore_rng
    from .storage import CheckpointStorage, LocalStorage

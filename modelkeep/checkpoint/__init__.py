"""Checkpoints that never lose work: a manager, a storage backend, and the durable I/O beneath them.

* ``manager.CheckpointManager`` decides when to save (triggers), what to keep
  (retention) and what to resume from (the newest checkpoint that verifies);
* ``storage.LocalStorage`` / ``storage.FsspecStorage`` (behind the
  ``CheckpointStorage`` protocol) hold the files, each committed atomically
  by a committer of ``modelkeep.io`` (rename on a local disk, a commit marker
  written last on an object store); ``set_aside_checkpoints`` moves an earlier
  run's files aside through the same protocol;
* ``reading`` describes and reads checkpoints (``CheckpointInfo``), from a
  file or from any backend;
* ``sharded`` saves and loads sharded checkpoints through torch.distributed.checkpoint
  (``save_sharded``/``load_sharded``, each rank its own part, a JSON manifest committed last,
  resharding to another world size; ``export_sharded`` turns one into a model file).

What a checkpoint holds is captured by ``state.capture``; asynchronous saves
copy it into ``snapshot.SnapshotBuffers`` and write it on a background thread.
``SignalGuard`` turns SIGTERM/SIGINT into a checkpoint and a clean exit.

Names are imported on first use, so importing this package costs nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "export_checkpoint": "export", "list_checkpoints": "export", "manifest_pieces": "export",
    "select_checkpoint": "export",
    "CheckpointManager": "manager", "CheckpointWarning": "reading",
    "CheckpointInfo": "reading", "Restored": "reading", "describe_checkpoint": "reading", "read_checkpoint": "reading",
    "AnyOf": "policies", "EveryNEpochs": "policies", "EveryNSeconds": "policies", "EveryNSteps": "policies",
    "KeepAll": "policies", "KeepBestN": "policies", "KeepEveryNth": "policies", "KeepLastN": "policies",
    "KeepUnion": "policies", "OnBestMetric": "policies", "Retention": "policies", "SaveEvent": "policies",
    "Trigger": "policies",
    "SignalGuard": "signals",
    "SnapshotBuffers": "snapshot",
    "Position": "state", "Stateful": "state", "CheckpointState": "state", "capture_rng": "state",
    "restore_rng": "state",
    "CheckpointReader": "storage", "CheckpointStorage": "storage", "FsspecStorage": "storage",
    "LocalStorage": "storage", "set_aside_checkpoints": "storage",
    "save_sharded": "sharded", "load_sharded": "sharded", "latest_sharded": "sharded", "list_sharded": "sharded",
    "read_sharded": "sharded", "verify_sharded": "sharded", "export_sharded": "export",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from .export import export_checkpoint, export_sharded, list_checkpoints, manifest_pieces, select_checkpoint
    from .manager import CheckpointManager
    from .reading import CheckpointWarning
    from .policies import (AnyOf, EveryNEpochs, EveryNSeconds, EveryNSteps, KeepAll, KeepBestN, KeepEveryNth,
                           KeepLastN, KeepUnion, OnBestMetric, Retention, SaveEvent, Trigger)
    from .signals import SignalGuard
    from .snapshot import SnapshotBuffers
    from .state import Position, Stateful, CheckpointState, capture_rng, restore_rng
    from .reading import CheckpointInfo, Restored, describe_checkpoint, read_checkpoint
    from .sharded import latest_sharded, list_sharded, load_sharded, read_sharded, save_sharded, verify_sharded
    from .storage import CheckpointReader, CheckpointStorage, FsspecStorage, LocalStorage, set_aside_checkpoints

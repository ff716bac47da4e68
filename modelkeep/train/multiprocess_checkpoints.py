"""fit's checkpoints when several processes train: what the non-coordinators read through, and the sharded
checkpoints of a strategy that splits the training state across processes (FSDP2).

``ReadOnlyCheckpoints`` is the storage every process but the coordinator restores through (DDP: the
state is the same everywhere and the coordinator alone writes). ``checkpointing._Checkpointing`` hands its save and restore here when its strategy is not
``replicated``. The checkpoint is the one the single-file path writes, cut differently: ``capture``
(``checkpoint.state``) gives the same tensors and JSON tree — the model's and the optimizer's tensors
are DTensors now, each process holding its part — and ``checkpoint.sharded.save_sharded`` writes them
through torch.distributed.checkpoint with its JSON manifest, every process its own shard, into
``<checkpoint folder>/sharded/step-<step>/``. The document beside them holds the tree, the loop's
state, the trigger's state, the position, the run's fingerprint and the model's manifest pieces
(``extra_manifest``, what ``modelkeep export-checkpoint`` completes into a release file; the weights are the
tensors named ``model/<name>``). Every dtype is stored as itself (NumPy's random state as uint32).

Restoring is collective too: the tensors to fill are the live ones where they are DTensors (the model,
the optimizer state, first materialized), and new tensors shaped from the manifest for everything else
(random states, the epoch's losses), so ``load_sharded`` maps the saved chunks onto this run's sharding
whatever the number of processes that saved them. The same trigger, retention (the folder's
``keep_last``) and position rules as single-file checkpoints apply; nothing here touches the
single-file checkpoints beside them. Checkpoints on object storage (fsspec URLs) are not sharded yet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import CheckpointError, ConfigError

__all__ = ["ReadOnlyCheckpoints", "SHARDED_FOLDER", "ShardedCheckpoints", "refuse_sharded_only"]

SHARDED_FOLDER = "sharded"  # inside the checkpoint folder; the same name as checkpoint.sharded.SHARDED_FOLDER


class ReadOnlyCheckpoints:
    """A checkpoint storage seen by a process that restores but never writes (every process but the coordinator).

    It offers the reading half of the backend it wraps and no ``lock``, so its manager neither
    takes the folder (the coordinator holds it) nor cleans leftovers in it (the coordinator may be
    writing one); a write or delete through it is a bug and says so.
    """

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.location = getattr(storage, "location", "")

    def names(self) -> list[str]:
        return self.storage.names()

    def reading(self, name: str) -> Any:
        return self.storage.reading(name)

    def address(self, name: str) -> Any:
        return self.storage.address(name)

    def clean(self) -> list[str]:
        return []  # the coordinator's manager cleans

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise CheckpointError(f"only the coordinator writes checkpoints in {self.location}; this process reads them")

    write = delete = set_aside = _refuse


class ShardedCheckpoints:
    """Save and restore for ``_Checkpointing`` (``owner``) when the state is split across processes."""

    def __init__(self, directory: Any, manager: Any) -> None:
        if "://" in str(directory):
            raise ConfigError(f"sharded (FSDP2) checkpoints go to a local or shared folder, not {directory}; give "
                              "checkpoint.directory as a path every process can reach")
        self.directory = Path(directory) / SHARDED_FOLDER
        self.keep = _keep_last(getattr(manager, "keep", None))
        self.durable = bool(getattr(manager, "durable", True))

    def save(self, owner: Any, position: Any, metrics: Mapping[str, Any] | None) -> str:
        """Collective: every process writes its part; returns the checkpoint's folder name."""
        from ..checkpoint.sharded import save_sharded
        from ..checkpoint.state import capture, encode_tree

        run = owner.run
        owner.before_update()
        tensors, tree = capture(owner.state)
        loop = encode_tree(run.loop_state(), "loop/", tensors)
        trigger_state = getattr(owner.manager.save_on, "state_dict", None)
        # extra_manifest: the model's manifest pieces, what export-checkpoint makes a release file from (as for
        # single-file checkpoints); the weights are the tensors named "model/<name>".
        document = {"position": position.to_dict(), "state": tree, "loop": loop, "run": owner.fingerprint,
                    "history": run.history.to_dict(), "metrics": dict(metrics or {}),
                    "triggers": encode_tree(trigger_state(), "triggers/", tensors) if trigger_state else None,
                    "extra_manifest": owner.pieces}
        folder = save_sharded(self.directory, position.step, tensors, _plain(document), keep=self.keep,
                              durable=self.durable)
        return folder.name

    def restore(self, owner: Any) -> Any:
        """Collective: load the newest committed sharded checkpoint into the run; None when there is none."""
        from ..checkpoint.sharded import latest_sharded, load_sharded, open_sharded
        from ..checkpoint.state import Position, capture, decode_tree, restore

        folder = latest_sharded(self.directory) if self.directory.is_dir() else None
        if folder is None:
            return None
        manifest = open_sharded(folder)
        document = dict(manifest.document)
        if document.get("run") != owner.fingerprint:
            raise CheckpointError(f"the sharded checkpoints in {self.directory} were written by a run with other "
                                  "settings; resuming would mix two runs. Use the same settings to resume, or start "
                                  "over with `modelkeep train --restart` / fit(..., resume=False)")
        _materialize_optimizer_state(owner.run.optimizer)
        live, _ = capture(owner.state)
        tensors = {}
        for key, entry in manifest.metadata.state_dict_metadata.items():
            current = live.get(key)
            if current is not None and hasattr(current, "device_mesh"):  # a DTensor: fill this process's part
                tensors[key] = current
            else:  # replicated state (random states, the epoch's losses): the saved shape
                import torch

                tensors[key] = torch.zeros(tuple(entry.size), dtype=entry.properties.dtype)
        document = load_sharded(folder, tensors)
        restore(owner.state, tensors, document["state"])
        loader = getattr(owner.manager.save_on, "load_state_dict", None)
        if loader is not None and document.get("triggers") is not None:
            loader(decode_tree(document["triggers"], tensors))
        position = Position(**document["position"])
        owner.run.load_loop_state(position, decode_tree(document["loop"], tensors))
        owner.run.state.resumed_from = folder.name
        return folder


def refuse_sharded_only(directory: Any) -> None:
    """Refuse to start afresh beside sharded checkpoints (a run of ``strategy: fsdp`` resumed another way)."""
    from ..checkpoint.sharded import list_sharded

    folder = Path(str(directory)) / SHARDED_FOLDER
    if "://" not in str(directory) and folder.is_dir() and list_sharded(folder):
        raise CheckpointError(f"{directory} holds sharded (FSDP2) checkpoints and no single-file ones: resume with "
                              "the strategy that wrote them, under torchrun on any number of processes "
                              "(torchrun --nproc-per-node N -m modelkeep train CONFIG with strategy: fsdp)")


def _materialize_optimizer_state(optimizer: Any) -> None:
    """Give an optimizer that has not stepped yet its state tensors (Adam's moments), so a load has somewhere to
    put the saved ones: torch.distributed.checkpoint's own helper (a step with zero gradients and learning rate 0)."""
    from torch.distributed.checkpoint.state_dict import _init_optim_state

    _init_optim_state(optimizer)


def _keep_last(retention: Any) -> int:
    """The ``KeepLastN`` of the folder's retention (3 when there is none)."""
    for policy in [retention, *getattr(retention, "policies", ())]:
        n = getattr(policy, "n", None)
        if type(policy).__name__ == "KeepLastN" and isinstance(n, int):
            return n
    return 3


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and non-finite floats kept (the manifest's JSON encoder decides)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

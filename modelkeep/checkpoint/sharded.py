"""Sharded checkpoints: every rank writes its own part through torch.distributed.checkpoint, never a pickle.

A sharded checkpoint is a folder ``step-<step, 9 digits>/`` holding one raw shard file per rank that had
something to write (``__<rank>_0.distcp``) and ``manifest.json`` (``sharded_manifest``: DCP's metadata as JSON,
per-chunk and per-file xxh3-128 hashes, the non-tensor state and the caller's document)::

    >>> model_sd, optim_sd = get_state_dict(model, optimizer)          # FSDP2 DTensors, on every rank
    >>> save_sharded("run/checkpoints", step, {"model": model_sd, "optim": optim_sd},
    ...              {"position": {"epoch": 0, "batch": 12, "step": step}}, keep=3)
    >>> document = load_sharded("run/checkpoints", {"model": model_sd, "optim": optim_sd})   # any world size
    >>> set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)

Commit protocol (``save_sharded``, collective): the coordinator removes the temporaries of crashed saves and
makes ``step-<step>.tmp/``; every rank writes and fsyncs its shard there; the coordinator writes the manifest last
(after DCP has gathered every rank's write results) and renames the folder to ``step-<step>/``, then fsyncs the
parent. A crash at any point before the rename leaves only a ``.tmp`` folder, which readers never look at, so
the previous checkpoint stays the newest.

Loading (``load_sharded``, collective) reads and checks the manifest on every rank before DCP starts, refuses a
folder that holds DCP's ``.metadata`` pickle or any file the manifest does not list, and lets DCP's planners map
the saved chunks onto whatever the destination state dict holds now: DTensors sharded over a different number of
ranks, or plain tensors in one process. Tensors go through DCP; everything else in the state dict (learning
rates, betas, flags) is kept in the manifest as JSON and put back in place.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, FormatError, IntegrityError, ModelkeepError
from ..io.capped import read_capped
from ..io.committer import RenameCommitter
from .sharded_manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, SHARD_SUFFIX, ShardedManifest, decode_manifest, \
    encode_manifest
from .state import encode_tree

TEMP_SUFFIX = ".tmp"
_NAME = re.compile(r"^step-(\d{9,})$")
_TEMP = re.compile(r"^step-(\d{9,})\.tmp$")
RUN_CHECKPOINTS = "checkpoints"
#: Where fit keeps the sharded checkpoints of a strategy that splits the state (FSDP2) inside its checkpoint
#: folder, beside any single-file ones: ``<run>/checkpoints/sharded/step-<n>/``.
SHARDED_FOLDER = "sharded"


def sharded_name(step: int) -> str:
    return f"step-{step:09d}"


def step_of_folder(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- the process group


def _group() -> tuple[int, int, bool]:
    """``(rank, world_size, distributed)``; one process without a process group is rank 0 of 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def _agree(ok: bool, distributed: bool) -> bool:
    """Whether every rank is ``ok`` (an all-reduce of one flag), so no rank waits for one that failed."""
    if not distributed:
        return ok
    import torch.distributed as dist

    # NCCL reduces only GPU tensors; gloo (and the CPU side of a mixed backend) takes CPU ones.
    device = (torch.device("cuda", torch.cuda.current_device()) if "nccl" in str(dist.get_backend()).lower()
              and torch.cuda.is_available() else torch.device("cpu"))
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _unwrapped(exc: BaseException) -> BaseException:
    """The first modelkeep error a rank raised inside DCP (DCP wraps them in ``CheckpointException``)."""
    for error, _ in getattr(exc, "failures", {}).values():
        if isinstance(error, ModelkeepError):
            return error
    return CheckpointError(f"a sharded checkpoint operation failed: {str(exc)[:2000]}")


def _run_dcp(function: Any, *args: Any, **kwargs: Any) -> None:
    from torch.distributed.checkpoint.api import CheckpointException

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            function(*args, **kwargs)
        except CheckpointException as exc:
            raise _unwrapped(exc) from None


# --------------------------------------------------------------------------- state dicts


def split_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any],
                                                        dict[str, tuple[Any, ...]]]:
    """``(tensors, values, paths)``: the flat DCP keys of ``state_dict``, tensors apart from everything else."""
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict

    flat, paths = flatten_state_dict(dict(state_dict))
    tensors = {key: value for key, value in flat.items() if isinstance(value, torch.Tensor)}
    values = {key: value for key, value in flat.items() if key not in tensors}
    return tensors, values, {key: tuple(path) for key, path in paths.items()}


def _json_only(value: Any, where: str) -> Any:
    """``value`` in ``encode_tree``'s JSON-safe form; a tensor or array in it is refused."""
    found: dict[str, torch.Tensor] = {}
    encoded = encode_tree(value, where, found)
    if found:
        raise CheckpointError(f"{next(iter(found))!r} is a tensor or array inside JSON state of a sharded "
                              "checkpoint; put tensors in the state dict, not in the document")
    return encoded


# --------------------------------------------------------------------------- saving


def save_sharded(directory: str | os.PathLike[str], step: int, state_dict: Mapping[str, Any],
                 document: Mapping[str, Any], *, keep: int | None = None, durable: bool = True) -> Path:
    """Save ``state_dict`` (tensors, DTensors, plain values) and ``document`` (JSON) as ``directory/step-<step>/``.

    Collective: every rank of the default process group calls it with its own part of the state; in one process
    without a process group it saves everything. ``keep`` keeps only the newest ``keep`` checkpoints. Returns
    the committed folder.
    """
    from torch.distributed.checkpoint import state_dict_saver

    from .sharded_storage import RawShardWriter

    if keep is not None and keep < 1:
        raise CheckpointError(f"keep must be at least 1, got {keep}")
    directory = Path(directory)
    rank, world_size, distributed = _group()
    tensors, values, paths = split_state(state_dict)
    encoded_values = {key: _json_only(value, f"values/{key}/") for key, value in values.items()}
    encoded_document = _json_only(dict(document), "document/")
    name = sharded_name(step)
    committer = RenameCommitter(directory, durable=durable)
    problem: Exception | None = None
    if rank == 0:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for leftover in sorted(p.name for p in directory.iterdir() if _TEMP.match(p.name)):
                committer.delete_folder(leftover)  # what crashed saves left; readers never look at it
            (directory / (name + TEMP_SUFFIX)).mkdir()
        except OSError as exc:
            problem = exc
    if not _agree(problem is None, distributed):
        raise CheckpointError(f"cannot prepare {directory / (name + TEMP_SUFFIX)}: {problem or 'see rank 0'}")

    def manifest(metadata: Any) -> bytes:
        return encode_manifest(step=step, world_size=world_size, metadata=metadata, paths=paths,
                               values=encoded_values, document=encoded_document)

    writer = RawShardWriter(directory / (name + TEMP_SUFFIX), manifest, durable=durable)
    _run_dcp(state_dict_saver.save, tensors, storage_writer=writer, no_dist=not distributed)
    if rank == 0:
        try:
            if (directory / name).exists():
                committer.delete_folder(name)  # the same step saved again (a resumed run): the new one wins
            committer.move(name + TEMP_SUFFIX, name)  # the commit; durable: the parent folder is fsynced
            if keep is not None:  # a deletion lost in a power cut only leaves an old checkpoint: no fsync
                for old in list_sharded(directory)[:-keep]:
                    RenameCommitter(directory, durable=False).delete_folder(old.name)
        except OSError as exc:
            problem = exc
    if not _agree(problem is None, distributed):
        raise CheckpointError(f"cannot commit {directory / name}: {problem or 'see rank 0'}")
    return directory / name


# --------------------------------------------------------------------------- finding and opening


def sharded_root(location: str | os.PathLike[str]) -> Path:
    """The folder of sharded checkpoints of ``location``: itself, its ``sharded/`` (fit's checkpoint folder), its
    ``checkpoints/`` or its ``checkpoints/sharded/`` (a run folder: where ``strategy: fsdp`` writes them)."""
    folder = Path(location)
    for candidate in (folder, folder / SHARDED_FOLDER, folder / RUN_CHECKPOINTS,
                      folder / RUN_CHECKPOINTS / SHARDED_FOLDER):
        if any(step_of_folder(p.name) is not None for p in _entries(candidate)):
            return candidate
    return folder


def _entries(folder: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(folder)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def is_sharded(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a sharded checkpoint, or a folder (or run folder) holding committed ones."""
    folder = Path(location)
    return (folder / MANIFEST_NAME).is_file() or bool(list_sharded(sharded_root(folder)))


def list_sharded(directory: str | os.PathLike[str]) -> list[Path]:
    """The committed sharded checkpoints in ``directory`` (never ``.tmp`` folders), oldest step first."""
    found = [(step, path) for path in _entries(Path(directory))
             if (step := step_of_folder(path.name)) is not None and (path / MANIFEST_NAME).is_file()]
    return [path for _, path in sorted(found)]


def latest_sharded(directory: str | os.PathLike[str], *, verify: bool = False) -> Path | None:
    """The newest committed sharded checkpoint in ``directory`` whose manifest and files check out (every
    file hashed with ``verify``); damaged ones are skipped with a warning. None when there is none."""
    from .reading import CheckpointWarning

    for folder in reversed(list_sharded(sharded_root(directory))):
        try:
            verify_sharded(folder) if verify else open_sharded(folder)
        except (FormatError, CheckpointError) as exc:
            warnings.warn(f"skipping the damaged sharded checkpoint {folder}: {exc}", CheckpointWarning, stacklevel=2)
            continue
        return folder
    return None


def _refuse_folder(folder: Path, why: str) -> FormatError:
    return FormatError(f"{folder} is not a sharded modelkeep checkpoint: {why}")


def open_sharded(folder: str | os.PathLike[str]) -> ShardedManifest:
    """The checked manifest of the sharded checkpoint ``folder``; nothing but ``manifest.json`` is read.

    Refused with ``FormatError``: a ``.metadata`` file (DCP's pickle, which modelkeep never loads), any entry
    other than the manifest and the shard files it lists, a manifest over its limits or contradicting the files.
    """
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        raise CheckpointError(f"{folder} holds no {MANIFEST_NAME}: it is not a committed sharded checkpoint "
                              "(a save that crashed, or another kind of folder)")
    sizes: dict[str, int] = {}
    for entry in os.scandir(folder):
        if entry.name.endswith(".metadata"):
            raise _refuse_folder(folder, f"it holds {entry.name}, a pickle written by torch.distributed.checkpoint's "
                                         "own writer; modelkeep never loads pickles. Re-save it with save_sharded")
        if not entry.is_file(follow_symlinks=False):
            raise _refuse_folder(folder, f"{entry.name!r} is not a regular file")
        if entry.name != MANIFEST_NAME:
            if not entry.name.endswith(SHARD_SUFFIX):
                raise _refuse_folder(folder, f"it holds an unknown file {entry.name[:80]!r}")
            sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
    data = read_capped(folder / MANIFEST_NAME, MAX_MANIFEST_BYTES,
                       lambda why: _refuse_folder(folder, f"{MANIFEST_NAME}: {why}"))
    manifest = decode_manifest(data, folder, sizes)
    unlisted = sorted(set(sizes) - set(manifest.files))
    if unlisted:
        raise _refuse_folder(folder, f"it holds shard files its manifest does not list: {unlisted[:5]}")
    return manifest


def verify_sharded(folder: str | os.PathLike[str]) -> ShardedManifest:
    """``open_sharded``, and the xxh3-128 hash of every shard file checked against the manifest."""
    from .sharded_storage import hash_file

    manifest = open_sharded(folder)
    for name, (_, expected) in sorted(manifest.files.items()):
        if hash_file(manifest.folder / name) != expected:
            raise IntegrityError(f"shard file {manifest.folder / name} does not match its hash in the manifest: it "
                                 "is damaged; use an earlier checkpoint")
    return manifest


def _checkpoint_folder(path_or_directory: str | os.PathLike[str]) -> Path:
    path = Path(path_or_directory)
    if (path / MANIFEST_NAME).is_file() or step_of_folder(path.name) is not None:
        return path
    latest = latest_sharded(path)
    if latest is None:
        raise CheckpointError(f"no committed sharded checkpoint in {path}; give a step-<n> folder or the folder "
                              "holding them")
    return latest


# --------------------------------------------------------------------------- loading


def load_sharded(path_or_directory: str | os.PathLike[str], state_dict: dict[str, Any]) -> dict[str, Any]:
    """Fill ``state_dict`` in place from a sharded checkpoint (a ``step-<n>`` folder, or the newest one in a
    folder) and return the document saved with it.

    Collective like ``save_sharded``. The world size may differ from the saving one: DCP's planners map the
    saved chunks onto the DTensors (or plain tensors) ``state_dict`` holds. Every chunk read is hash-checked.
    """
    from torch.distributed.checkpoint import state_dict_loader
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    from .sharded_storage import RawShardReader

    manifest = open_sharded(_checkpoint_folder(path_or_directory))
    tensors, values, paths = split_state(state_dict)
    missing = sorted(key for key in values if key not in manifest.values)
    if missing:
        raise CheckpointError(f"{manifest.folder} holds no value for {missing[:5]}; it holds "
                              f"{sorted(manifest.values)[:10]}")
    _, _, distributed = _group()
    _run_dcp(state_dict_loader.load, tensors, storage_reader=RawShardReader(manifest), planner=DefaultLoadPlanner(),
             no_dist=not distributed)
    for key in values:
        set_element(state_dict, paths[key], manifest.values[key])
    return dict(manifest.document)


def read_sharded(path_or_directory: str | os.PathLike[str]) -> tuple[ShardedManifest, dict[str, torch.Tensor]]:
    """The manifest and every tensor of a sharded checkpoint assembled whole, in this process alone (no
    process group needed): ``{flat key: full tensor}``. Memory: the sum of the shard files' sizes."""
    from torch.distributed.checkpoint import state_dict_loader
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    from .sharded_storage import RawShardReader

    manifest = open_sharded(_checkpoint_folder(path_or_directory))
    tensors = {fqn: torch.zeros(tuple(entry.size), dtype=entry.properties.dtype)  # type: ignore[union-attr]
               for fqn, entry in manifest.metadata.state_dict_metadata.items()}
    _run_dcp(state_dict_loader.load, tensors, storage_reader=RawShardReader(manifest), planner=DefaultLoadPlanner(),
             no_dist=True)
    return manifest, tensors

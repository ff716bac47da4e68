"""Where checkpoint files live, behind one small protocol: a local folder, or any fsspec store.

A backend stores whole checkpoint files by name. ``write`` is all-or-nothing:
after it returns the file is complete and durable; after it raises, no file of
that name is half-written and every other file is untouched. Both backends get
that from a committer of ``modelkeep.io``: ``LocalStorage`` from
``RenameCommitter`` (temporary name, fsync, rename, through ``write_tensors``),
``FsspecStorage`` from ``MarkerCommitter`` (the file under its final name, a
commit marker written last, for object stores that cannot rename). A local
write of asynchronous snapshot buffers, which are laid out as the file itself
(``_image.py``), goes through ``io.atomic_write_image`` in one pass instead.

Reading goes through the same protocol (``names``, ``reading``, ``address``),
so listing, selecting and restoring checkpoints work on any backend; nothing
here globs a folder. This module never decides which checkpoint to write, keep
or read (that is the manager's job) and never changes a stored file except
through its committer.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Mapping, Protocol, Sequence

from ..io.atomic import atomic_write_image
from ..io.committer import MarkerCommitter, RenameCommitter
from ..io.lock import FolderLock

if TYPE_CHECKING:  # pragma: no cover
    import torch

PREVIOUS = "previous"  # where set_aside_checkpoints moves an earlier run's checkpoints (inside the folder)
RUN_CHECKPOINTS = "checkpoints"  # a run folder keeps its checkpoints in this sub-folder
_NAME = re.compile(r"^checkpoint-(\d+)\.safetensors$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:09d}.safetensors"


def step_of(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


class CheckpointReader(Protocol):
    """The reading side of a backend: what ``list_checkpoints``, ``select_checkpoint`` and ``restore`` need.

    Call order: ``names()``, then for each name of interest ``with reading(name) as path:`` to parse it;
    ``address(name)`` says where it is, for people (a local path or a URL).
    """

    location: str

    def names(self) -> list[str]:
        """Names of the committed files (never temporaries of a write in progress or a crashed one)."""
        ...

    def reading(self, name: str) -> ContextManager[Path]:
        """A local file holding ``name`` during the block (a remote store downloads a temporary copy)."""
        ...

    def address(self, name: str) -> Path | str:
        """Where ``name`` is stored: a local ``Path``, or a URL for a remote store."""
        ...


class CheckpointStorage(CheckpointReader, Protocol):
    """A full backend: the reading side plus the four operations that change it.

    Call order: ``clean()`` once at start-up, then any number of ``write``/``names``/``reading``/``delete``;
    ``set_aside`` when a new run must start from an empty folder.

    A worked example, a backend that only counts what it is asked to write::

        class CountingStorage(LocalStorage):
            def __init__(self, directory): super().__init__(directory); self.writes = 0
            def write(self, name, tensors, metadata, *, durable=True):
                self.writes += 1
                return super().write(name, tensors, metadata, durable=durable)
    """

    def write(self, name: str, tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str], *,
              durable: bool = True) -> int:
        """Store one checkpoint file atomically; return its size in bytes."""
        ...

    def delete(self, name: str) -> None:
        """Remove one file; removing a missing file is not an error."""
        ...

    def clean(self) -> list[str]:
        """Remove what crashed writers left behind; return what was removed."""
        ...

    def set_aside(self, names: Sequence[str], folder: str) -> Path | str:
        """Move ``names`` into the sub-folder ``folder``, deleting what it held before; return its address."""
        ...


class _CommittedStorage:
    """What both backends share: everything but ``write``, delegated to a committer of ``modelkeep.io``."""

    committer: Any
    location: str

    def names(self) -> list[str]:
        return self.committer.names()

    def reading(self, name: str) -> ContextManager[Path]:
        return self.committer.local_copy(name)

    def delete(self, name: str) -> None:
        self.committer.delete(name)

    def clean(self) -> list[str]:
        return self.committer.clean()

    def set_aside(self, names: Sequence[str], folder: str) -> Path | str:
        self.committer.delete_folder(folder)
        for name in names:
            self.committer.move(name, f"{folder}/{name}")
        return self.address(folder)

    def address(self, name: str) -> Path | str:
        raise NotImplementedError


class LocalStorage(_CommittedStorage):
    """Checkpoint files in one local folder, written with ``write_tensors`` (temporary name, fsync, rename)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.location = str(self.directory)
        self.committer = RenameCommitter(self.directory)

    def write(self, name: str, tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str], *,
              durable: bool = True) -> int:
        from ..artifact.tensors import write_tensors

        image = getattr(tensors, "file_image", None)  # snapshot buffers laid out as the file (snapshot.py)
        rendered = image.render(metadata) if image is not None else None
        if rendered is not None:
            # One pass from the snapshot to the disk, past the page cache where it can (io.atomic_write_image).
            path = atomic_write_image(self.committer.prepare(name), *rendered, durable=durable)
        else:
            # write_tensors commits through io.atomic_write: the RenameCommitter's own mechanism.
            path = write_tensors(self.committer.prepare(name), tensors, metadata, durable=durable)
        return path.stat().st_size

    def address(self, name: str) -> Path:
        return self.directory / name

    def lock(self, *, purpose: str = "checkpoints") -> FolderLock:
        """The folder's advisory lock, taken: one process at a time writes here (``FolderLockedError`` if not)."""
        return FolderLock(self.directory, purpose=purpose).acquire()


class FsspecStorage(_CommittedStorage):
    """Checkpoint files on an fsspec store (``s3://bucket/run``, ``memory://run``), committed by a marker written last.

    Each file is written locally (under ``scratch``) by ``write_tensors``, then
    uploaded under its final name; its marker follows. Reading downloads a
    temporary local copy, which the file's own hashes then verify.
    """

    def __init__(self, location: str, *, filesystem: Any = None,
                 scratch: str | os.PathLike[str] | None = None) -> None:
        self.committer = MarkerCommitter(location, filesystem=filesystem, scratch=scratch)
        self.location = str(location)

    def write(self, name: str, tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str], *,
              durable: bool = True) -> int:
        from ..artifact.tensors import write_tensors

        with self.committer.staged(name) as path:
            write_tensors(path, tensors, metadata, durable=False)  # a scratch copy; the store makes it durable
            size = path.stat().st_size
        return size

    def address(self, name: str) -> str:
        return f"{self.location.rstrip('/')}/{name}"


def is_url(location: Any) -> bool:
    """Whether ``location`` names an fsspec store (``scheme://...``) rather than a local folder."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def checkpoint_storage(location: Any) -> Any:
    """The backend for ``location``: a backend object as it is, a URL on fsspec, anything else a local folder."""
    if hasattr(location, "names") and hasattr(location, "reading"):
        return location
    if is_url(location):
        return FsspecStorage(location)
    if isinstance(location, str) and location.startswith("file://"):
        location = location[len("file://"):]
    return LocalStorage(location)


def set_aside_checkpoints(directory: Any) -> Path | str | None:
    """Move the checkpoints in ``directory`` (a folder, a URL or a backend) into its ``previous/`` sub-folder.

    What ``modelkeep train --restart`` and ``fit(..., resume=False)`` do with an earlier run's
    checkpoints: nothing is mixed into the new run and nothing is lost at once; an earlier
    ``previous/`` (the generation before) is deleted. Returns where they went, or None when
    there was nothing to move.
    """
    storage = checkpoint_storage(directory)
    names = [name for name in storage.names() if step_of(name) is not None]
    if not names:
        return None
    take_lock = getattr(storage, "lock", None)  # a run still writing these checkpoints is not robbed of them
    lock = take_lock(purpose="setting checkpoints aside") if take_lock is not None else None
    try:
        return storage.set_aside(names, PREVIOUS)
    finally:
        if lock is not None:
            lock.release()


def run_checkpoints(location: Any) -> Any:
    """The checkpoint storage of ``location``: a checkpoint folder, or a run folder holding ``checkpoints/``.

    ``location`` (a folder, a URL or a backend) is used as it is when it holds checkpoints itself or has
    no ``checkpoints`` sub-folder; otherwise its ``checkpoints`` sub-folder is, so commands and functions
    accept the run folder as well as its checkpoint folder.
    """
    storage = checkpoint_storage(location)
    if isinstance(location, (str, os.PathLike)) and any(step_of(name) is not None for name in storage.names()):
        return storage
    if isinstance(location, os.PathLike) or (isinstance(location, str) and not is_url(location)):
        inner = Path(str(location).removeprefix("file://")) / RUN_CHECKPOINTS
        return LocalStorage(inner) if inner.is_dir() else storage
    if isinstance(location, str):
        inner_storage = checkpoint_storage(f"{location.rstrip('/')}/{RUN_CHECKPOINTS}")
        if any(step_of(name) is not None for name in inner_storage.names()):
            return inner_storage
    return storage


"""Where checkpoint files live, behind one small protocol (local folders now, fsspec stores later).

A backend stores whole files by name. ``write`` must be all-or-nothing: after
it returns the file is complete and durable; after it raises, no file of that
name is half-written and every other file is untouched. ``LocalStorage`` gets
that from ``atomic.atomic_write`` (through ``write_tensors``); a store that
cannot rename would write a commit marker last instead.

This module never decides which checkpoint to write, keep or read: that is the
manager's job.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Mapping, Protocol

import torch

from .atomic import TEMP_MARKER, clean_leftovers, fsync_directory


class CheckpointStorage(Protocol):
    """Call order: ``clean()`` once at start-up, then any number of ``write``/``names``/``local_path``/``delete``.

    A worked example, a backend that only counts what it is asked to write::

        class CountingStorage(LocalStorage):
            def __init__(self, directory): super().__init__(directory); self.writes = 0
            def write(self, name, tensors, metadata, *, durable=True):
                self.writes += 1
                return super().write(name, tensors, metadata, durable=durable)
    """

    location: str

    def write(self, name: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], *,
              durable: bool = True) -> int:
        """Store one checkpoint file atomically; return its size in bytes."""
        ...

    def names(self) -> list[str]:
        """Names of the committed files (never temporaries of a write in progress or a crashed one)."""
        ...

    def local_path(self, name: str) -> Path:
        """A local path from which the file can be read (a remote store would download to a cache)."""
        ...

    def delete(self, name: str) -> None:
        """Remove one file; removing a missing file is not an error."""
        ...

    def clean(self) -> list[str]:
        """Remove what crashed writers left behind; return what was removed."""
        ...


class LocalStorage:
    """Checkpoint files in one local folder, written with ``write_tensors`` (temporary name, fsync, rename)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.location = str(self.directory)

    def write(self, name: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], *,
              durable: bool = True) -> int:
        from ..artifact.tensors import write_tensors

        self.directory.mkdir(parents=True, exist_ok=True)
        path = write_tensors(self.directory / name, tensors, metadata, durable=durable)
        return path.stat().st_size

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(entry.name for entry in os.scandir(self.directory)
                      if entry.is_file() and not entry.name.startswith(".") and TEMP_MARKER not in entry.name)

    def local_path(self, name: str) -> Path:
        return self.directory / name

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / name).unlink()
        fsync_directory(self.directory)

    def clean(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return [path.name for path in clean_leftovers(self.directory)]

"""How an item becomes visible all or nothing: the two implementations of ``Committer`` (``committing.py``).

* ``RenameCommitter`` keeps items in a local folder. A write goes to a
  temporary name, is fsynced and renamed over the final name, and the folder is
  fsynced (``atomic.atomic_write``); ``clean`` removes temporaries of writers
  that died, never those of a live one.
* ``MarkerCommitter`` keeps items on any fsspec filesystem, including object
  stores that cannot rename (S3, GCS, ``memory://``). The payload is written
  under its final name, then a small marker object ``<name>.modelkeep-committed``
  recording its size is written last. A reader treats an item without a marker
  (or whose size differs from the marker's) as absent; overwriting or deleting
  removes the marker first. ``clean`` removes payloads without a marker.

Besides the protocol's three methods, both carry the few other operations that
change their location — ``names``, ``open``, ``local_copy``, ``delete``,
``move``, ``delete_folder`` — because how an item is listed, deleted or moved
depends on how it was committed. The stores built on them (``blobstore``,
``modelkeep.checkpoint.storage``) never change a location themselves.

Item names are relative paths with ``/`` separators (``ab/cdef...``); names
starting with ``.`` are reserved for temporaries and never listed.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from ..errors import ConfigError, ModelNotFoundError
from .atomic import TEMP_MARKER, atomic_write, clean_leftovers, fsync_directory
from .committing import Committer  # noqa: F401 - the protocol these implement, importable from here too

MARKER_SUFFIX = ".modelkeep-committed"
MAX_MARKER_BYTES = 4096  # a marker is a few dozen bytes; anything larger is not ours
COPY_CHUNK = 8 << 20


def check_name(name: str) -> str:
    """``name`` if it is a relative ``/``-separated path without empty, ``.`` or ``..`` parts; else ``ConfigError``."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name \
            or any(part in ("", ".", "..") for part in name.split("/")):
        raise ConfigError(f"an item name must be a relative path with '/' separators and no empty, '.' or '..' "
                          f"parts, got {str(name)[:80]!r}")
    return name


def _listed(name: str) -> bool:
    base = posixpath.basename(name)
    return not base.startswith(".") and TEMP_MARKER not in base


class RenameCommitter:
    """Items as files in a local folder, committed by rename (see the module docstring).

    ``durable=False`` skips every fsync: safe against a killed process, not against a power cut.
    """

    def __init__(self, directory: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.directory = Path(directory)
        self.location = str(self.directory)
        self.durable = durable

    def path(self, name: str) -> Path:
        """The local file of item ``name`` (whether or not it exists)."""
        return self.directory / check_name(name)

    @contextlib.contextmanager
    def writing(self, name: str, *, durable: bool | None = None) -> Iterator[BinaryIO]:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, durable=self.durable if durable is None else durable) as handle:
            yield handle

    def prepare(self, name: str) -> Path:
        """The path a writer that commits by itself through ``atomic_write`` (``write_tensors``) writes to."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def is_committed(self, name: str) -> bool:
        return _listed(name) and self.path(name).is_file()

    def clean(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        removed = []
        for folder, _, _ in os.walk(self.directory):
            removed += [path.relative_to(self.directory).as_posix() for path in clean_leftovers(folder)]
        return removed

    def names(self, folder: str = "", *, recursive: bool = False) -> list[str]:
        """Committed items directly in ``folder`` (``""``: the top), or anywhere below it with ``recursive``."""
        base = self.path(folder) if folder else self.directory
        if not base.is_dir():
            return []
        if recursive:
            found = [Path(root, file).relative_to(self.directory).as_posix()
                     for root, _, files in os.walk(base) for file in files]
        else:
            found = [f"{folder}/{entry.name}" if folder else entry.name
                     for entry in os.scandir(base) if entry.is_file()]
        return sorted(name for name in found if _listed(name))

    def open(self, name: str) -> BinaryIO:
        """Item ``name`` opened for reading; ``ModelNotFoundError`` when it is not committed."""
        if not self.is_committed(name):
            raise ModelNotFoundError(f"no item {name!r} in {self.location}")
        return open(self.path(name), "rb")

    def read(self, name: str, limit: int) -> bytes:
        """At most ``limit`` bytes of item ``name``; ``FileNotFoundError`` when it is not committed."""
        if not _listed(name):
            raise FileNotFoundError(name)
        with open(self.path(name), "rb") as handle:
            return handle.read(limit)

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        """A local file holding item ``name`` during the block: here, the item's own file."""
        if not self.is_committed(name):
            raise ModelNotFoundError(f"no item {name!r} in {self.location}")
        yield self.path(name)

    def delete(self, name: str) -> None:
        """Remove item ``name``; a missing item is not an error."""
        path = self.path(name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if self.durable:
            fsync_directory(path.parent)

    def move(self, name: str, new_name: str) -> None:
        """Rename item ``name`` to ``new_name`` (replacing it) in one atomic step."""
        source, target = self.path(name), self.path(new_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        if self.durable:
            fsync_directory(source.parent)
            fsync_directory(target.parent)

    def delete_folder(self, folder: str) -> None:
        """Remove ``folder`` and everything in it; a missing folder is not an error."""
        path = self.path(folder)
        if path.exists():
            shutil.rmtree(path)
            if self.durable:
                fsync_directory(path.parent)


class MarkerCommitter:
    """Items on an fsspec filesystem, committed by writing a marker last (see the module docstring).

    ``location`` is a URL (``s3://bucket/models``, ``memory://run``, a local
    path); pass ``filesystem`` to use an fsspec filesystem object already made,
    ``location`` then being a path on it. Writes are staged in a local
    temporary file (under ``scratch``, default the system's temporary folder),
    so the handle ``writing`` gives is seekable even where the store's own
    files are not; the upload happens when the block exits.
    """

    def __init__(self, location: str, *, filesystem: Any = None,
                 scratch: str | os.PathLike[str] | None = None) -> None:
        if filesystem is None:
            from fsspec.core import url_to_fs

            filesystem, location_path = url_to_fs(str(location))
        else:
            location_path = str(location)
        self.fs = filesystem
        self.location = str(location)
        self.root = location_path.rstrip("/")
        self.scratch = scratch

    def path(self, name: str) -> str:
        """The filesystem path of item ``name``'s payload."""
        return f"{self.root}/{check_name(name)}"

    # ------------------------------------------------------------------ committing

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[BinaryIO]:
        check_name(name)
        with tempfile.TemporaryFile(dir=self.scratch) as spool:
            yield spool  # type: ignore[misc]
            spool.flush()
            spool.seek(0)
            self._commit(name, spool)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def staged(self, name: str) -> Iterator[Path]:
        """A local path to write item ``name`` to (with any path-based writer); committed when the block exits."""
        check_name(name)
        with tempfile.TemporaryDirectory(prefix="modelkeep-stage-", dir=self.scratch,
                                         ignore_cleanup_errors=True) as folder:
            path = Path(folder) / posixpath.basename(name)
            yield path
            with open(path, "rb") as source:
                self._commit(name, source)

    def _commit(self, name: str, source: BinaryIO) -> int:
        path = self.path(name)
        self._remove(path + MARKER_SUFFIX)  # readers see the item absent before its bytes change
        self._make_parent(path)
        size = 0
        try:
            with self.fs.open(path, "wb") as out:
                while chunk := source.read(COPY_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
        except BaseException:
            with contextlib.suppress(Exception):
                self._remove(path)
            raise
        self.fs.pipe_file(path + MARKER_SUFFIX, json.dumps({"modelkeep_commit": 1, "size": size}).encode())
        return size

    def replace(self, name: str, data: bytes) -> None:
        """Write small item ``name`` over a committed one with no moment in which it is absent.

        On an object store a PUT replaces an object whole, so the bytes go first and the marker after;
        a reader in between finds the old marker beside the new bytes and takes them when the sizes
        agree, so give such items a fixed size (the registry's aliases have one). ``writing`` instead
        removes the marker first: the item is absent until its new bytes are complete."""
        path = self.path(name)
        self._make_parent(path)
        self.fs.pipe_file(path, bytes(data))
        self.fs.pipe_file(path + MARKER_SUFFIX, json.dumps({"modelkeep_commit": 1, "size": len(data)}).encode())

    def is_committed(self, name: str) -> bool:
        path = self.path(name)
        size = self._marker_size(path + MARKER_SUFFIX)
        if size is None:
            return False
        try:
            return int(self.fs.size(path)) == size
        except FileNotFoundError:
            return False

    def _marker_size(self, marker: str) -> int | None:
        try:  # one ranged GET: on S3, opening a file would first ask for its details (HEAD, then a listing)
            raw = self.fs.cat_file(marker, start=0, end=MAX_MARKER_BYTES + 1)
        except FileNotFoundError:
            return None
        try:
            size = json.loads(raw)["size"] if len(raw) <= MAX_MARKER_BYTES else None
        except (ValueError, TypeError, KeyError):
            return None
        return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None

    def clean(self, *, older_than: float = 0.0) -> list[str]:
        """Remove payloads without a marker and markers without a payload; return the names removed.

        A write in progress has no marker yet either: call this at start-up,
        when no other process writes to this location, or pass ``older_than``
        (seconds) to spare what was written recently.
        """
        files = set(self._files(self.root, recursive=True))
        removed = []
        now = _dt.datetime.now(_dt.timezone.utc)
        for name in sorted(files):
            if name.endswith(MARKER_SUFFIX):
                orphan = name[:-len(MARKER_SUFFIX)] not in files
            else:
                orphan = name + MARKER_SUFFIX not in files
            if orphan and (older_than <= 0 or self._age(name, now) >= older_than):
                self._remove(f"{self.root}/{name}")
                removed.append(name)
        return removed

    def _age(self, name: str, now: _dt.datetime) -> float:
        try:
            modified = self.fs.modified(f"{self.root}/{name}")
        except (NotImplementedError, FileNotFoundError, OSError):
            return 0.0  # unknown: treat it as new, so it is spared
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=_dt.timezone.utc)
        return (now - modified).total_seconds()

    # ------------------------------------------------------------------ the location

    def names(self, folder: str = "", *, recursive: bool = False) -> list[str]:
        """Committed items directly in ``folder`` (``""``: the top), or anywhere below it with ``recursive``.

        One listing of the store; an item is listed when its marker is listed beside it.
        """
        base = self.path(folder) if folder else self.root
        files = set(self._files(base, recursive=recursive))
        prefix = f"{folder}/" if folder else ""
        return sorted(prefix + name for name in files
                      if not name.endswith(MARKER_SUFFIX) and name + MARKER_SUFFIX in files and _listed(name))

    def _files(self, base: str, *, recursive: bool) -> list[str]:
        """Paths of the files under ``base``, relative to it."""
        try:
            if recursive:
                paths = self.fs.find(base, withdirs=False)
            else:
                paths = [entry["name"] for entry in self.fs.ls(base, detail=True) if entry.get("type") == "file"]
        except FileNotFoundError:
            return []
        start = base.rstrip("/") + "/"
        return [path[len(start):] for path in (p.rstrip("/") for p in paths) if path.startswith(start)]

    def open(self, name: str) -> BinaryIO:
        """Item ``name`` opened for reading; ``ModelNotFoundError`` when it is not committed."""
        if not self.is_committed(name):
            raise ModelNotFoundError(f"no item {name!r} in {self.location}")
        return self.fs.open(self.path(name), "rb")

    def read(self, name: str, limit: int) -> bytes:
        """At most ``limit`` bytes of item ``name`` in two requests (its marker, then the bytes);
        ``FileNotFoundError`` when it is not committed or its size is not the marker's."""
        path = self.path(name)
        size = self._marker_size(path + MARKER_SUFFIX)
        if size is None:
            raise FileNotFoundError(name)
        data = self.fs.cat_file(path, start=0, end=min(limit, size + 1)) if size else b""
        if len(data) != min(size, limit):
            raise FileNotFoundError(name)  # being rewritten, or a payload its marker does not describe
        return data

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        """A local file holding item ``name`` during the block: a downloaded copy, removed afterwards."""
        with self.open(name) as source, tempfile.TemporaryDirectory(
                prefix="modelkeep-read-", dir=self.scratch, ignore_cleanup_errors=True) as folder:
            path = Path(folder) / posixpath.basename(name)
            with open(path, "xb") as out:
                shutil.copyfileobj(source, out, COPY_CHUNK)
            yield path

    def delete(self, name: str) -> None:
        """Remove item ``name`` (its marker first, so no reader sees it half gone); a missing item is not an error."""
        path = self.path(name)
        self._remove(path + MARKER_SUFFIX)
        self._remove(path)

    def move(self, name: str, new_name: str) -> None:
        """Give item ``name`` the name ``new_name``: copied, committed under the new name, then deleted."""
        source, target = self.path(name), self.path(new_name)
        marker = self._marker_size(source + MARKER_SUFFIX)
        if marker is None:
            raise ModelNotFoundError(f"no item {name!r} in {self.location}")
        self._remove(target + MARKER_SUFFIX)
        self._make_parent(target)
        self.fs.copy(source, target)
        self.fs.pipe_file(target + MARKER_SUFFIX, json.dumps({"modelkeep_commit": 1, "size": marker}).encode())
        self.delete(name)

    def delete_folder(self, folder: str) -> None:
        """Remove ``folder`` and everything in it; a missing folder is not an error."""
        path = self.path(folder)
        with contextlib.suppress(FileNotFoundError):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def _make_parent(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent and parent != "/":
            with contextlib.suppress(FileExistsError):
                self.fs.makedirs(parent, exist_ok=True)

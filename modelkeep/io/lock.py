"""Advisory folder locks: one process at a time writes a run folder or a checkpoint folder.

``FolderLock(directory)`` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the file
``directory/.modelkeep-lock`` and writes who holds it (PID, host, start time)
into it. A second process is refused at once with ``FolderLockedError``, which
names that holder. The kernel drops a flock when its process dies, so a lock
file that a dead process left behind is free: it is taken over, with a
``StaleLockWarning`` naming the dead holder.

The lock file is created once and never replaced, renamed or deleted (the lock
lives on its inode: replacing it would let a second process lock a new file
while the first still holds the old one); releasing it empties it. Within one
process the lock is counted rather than taken twice, so a checkpoint manager
re-opened on its folder does not lock itself out: the lock guards against other
processes, not threads. Where ``flock`` does not exist (Windows) the folder is
used unlocked; where the file system refuses it (``ENOLCK``), unlocked with a warning.

This module never imports torch and never touches any file but the lock file.
"""
from __future__ import annotations

import datetime as _dt
import errno as _errno
import json
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

from ..errors import StorageError
from .atomic import process_alive

LOCK_NAME = ".modelkeep-lock"
MAX_LOCK_BYTES = 4096  # what a holder writes is a few dozen bytes; more is not ours

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FolderLockedError(StorageError):
    """Another live process holds the folder's lock (a training run or checkpoint manager in progress)."""


class StaleLockWarning(UserWarning):
    """A folder's lock file named a process that is gone; this process took the lock over."""


_held: dict[str, "_Held"] = {}  # real path of the lock file -> the lock this process holds on it
_held_guard = threading.Lock()


class _Held:
    def __init__(self, fd: int | None) -> None:
        self.fd, self.count, self.pid = fd, 0, os.getpid()


def _describe(holder: dict[str, Any]) -> str:
    return (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
            f"{holder.get('started', '?')}" + (f" ({holder['purpose']})" if holder.get("purpose") else ""))


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, MAX_LOCK_BYTES + 1, 0)
        holder = json.loads(raw) if 0 < len(raw) <= MAX_LOCK_BYTES else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class FolderLock:
    """The advisory lock of one folder (see the module docstring); a context manager.

    ``purpose`` (say ``"training run"``) is recorded for whoever is refused. ``acquire``
    creates the folder when it does not exist; ``release`` is safe to call more than once.
    """

    def __init__(self, directory: str | os.PathLike[str], *, purpose: str = "") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.purpose = purpose
        self._key: str | None = None

    @property
    def held(self) -> bool:
        return self._key is not None

    def acquire(self) -> "FolderLock":
        """Take the lock (once per object); ``FolderLockedError`` when another live process holds it."""
        if self._key is not None:
            return self
        fd = self._open()
        key = os.path.realpath(self.path)
        with _held_guard:
            held = _held.get(key)
            if held is not None and held.pid == os.getpid():
                if fd is not None:
                    os.close(fd)
            else:
                held = _held[key] = _Held(self._lock(fd) if fd is not None else None)
            held.count += 1
        self._key = key
        return self

    def release(self) -> None:
        """Give the lock back (the last holder in this process empties the file and unlocks it)."""
        key, self._key = self._key, None
        if key is None:
            return
        with _held_guard:
            held = _held.get(key)
            if held is None or held.pid != os.getpid():
                return
            held.count -= 1
            if held.count > 0:
                return
            del _held[key]
        if held.fd is not None:
            try:
                os.ftruncate(held.fd, 0)  # a lock file with a holder in it means "not released cleanly"
            except OSError:
                pass
            finally:
                os.close(held.fd)  # closing drops the flock

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    # ------------------------------------------------------------------ the file

    def _open(self) -> int | None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not self.directory.is_dir():
                raise NotADirectoryError(_errno.ENOTDIR, os.strerror(_errno.ENOTDIR))
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            if exc.errno == _errno.ENOTDIR or isinstance(exc, (FileExistsError, NotADirectoryError)):
                raise StorageError(f"cannot use {self.directory} as a folder: a file of that name is in the way; "
                                   "remove it or choose another folder", errno=exc.errno) from exc
            raise StorageError(f"cannot lock the folder {self.directory}: {exc.strerror or exc} (it must be a "
                               "writable folder); fix its permissions or choose another folder",
                               errno=exc.errno) from exc

    def _lock(self, fd: int) -> int | None:
        if fcntl is None:  # pragma: no cover - Windows: no flock; the folder is used unlocked
            os.close(fd)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (_errno.EWOULDBLOCK, _errno.EAGAIN, _errno.EACCES):
                raise FolderLockedError(
                    f"{self.directory} is in use by {_describe(holder)}; wait for it to finish, stop it, or "
                    "choose another folder", errno=exc.errno) from exc
            warnings.warn(f"{self.directory} is used unlocked: its file system refuses locks ({exc.strerror})",
                          StaleLockWarning, stacklevel=3)
            return None
        previous = _read_holder(fd)
        if previous:
            pid = previous.get("pid")
            alive = isinstance(pid, int) and previous.get("host") == socket.gethostname() and process_alive(pid)
            state = "which did not release it" if alive else "which is no longer running"
            warnings.warn(f"took over the lock of {self.directory} left by {_describe(previous)}, {state}",
                          StaleLockWarning, stacklevel=3)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "purpose": self.purpose}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        except OSError:
            pass  # the flock is what locks; the note only helps whoever is refused
        return fd

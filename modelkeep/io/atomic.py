"""Atomic, durable file commits on a local disk: the only way modelkeep writes a local destination.

A write goes to a temporary name in the destination's folder; when the caller
has written everything, the file is flushed and fsynced, renamed over the
destination (an atomic step on POSIX and Windows), and the folder is fsynced so
the rename itself survives a power cut. If anything fails before the rename,
the temporary file is removed and the destination is exactly as it was.

Nothing else in modelkeep opens a destination for writing; everything goes
through ``atomic_write`` (or its one-call forms ``atomic_write_bytes`` and
``atomic_write_text``), directly or through ``committer.RenameCommitter``.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

TEMP_MARKER = ".modelkeep-tmp-"

#: ``SYNC_FILE_RANGE_WRITE`` from <fcntl.h>: start write-out of dirty pages in the range, do not wait.
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: object = None  # None: not looked up yet; False: unavailable; else the libc function


def _load_sync_file_range() -> object:
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                function = ctypes.CDLL(None, use_errno=True).sync_file_range
                function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                function.restype = ctypes.c_int
                _sync_file_range = function
            except (OSError, AttributeError, ImportError):
                pass
    return _sync_file_range


def start_writeback(fd: int, offset: int, nbytes: int) -> bool:
    """Ask the kernel to start writing ``[offset, offset + nbytes)`` of ``fd`` to disk now, without waiting.

    A hint for durable writers (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``): the final
    fsync then only waits for the tail. It guarantees nothing about durability; that is still
    the fsync's job. Returns False, silently, where it is unavailable or fails.
    """
    function = _load_sync_file_range()
    if not function or nbytes <= 0:
        return False
    return function(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) == 0  # type: ignore[operator]


def temporary_name(destination: Path) -> Path:
    """A unique temporary path beside ``destination`` (same folder, so rename is atomic)."""
    return destination.with_name(f".{destination.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(destination: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file for writing; on clean exit it replaces ``destination``.

    ``durable=True`` fsyncs the file before the rename and the folder after it.
    On an exception nothing at ``destination`` changes and the temporary file is removed.
    """
    destination = Path(destination)
    temp = temporary_name(destination)
    handle = open(temp, "xb")
    try:
        yield handle
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
        handle.close()
        os.replace(temp, destination)
    except BaseException:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if durable:
        fsync_directory(destination.parent)


def atomic_write_bytes(destination: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Replace ``destination`` with ``data``, all or nothing (see ``atomic_write``); return its path."""
    destination = Path(destination)
    with atomic_write(destination, durable=durable) as handle:
        handle.write(data)
    return destination


def atomic_write_text(destination: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
                      durable: bool = True) -> Path:
    """Replace ``destination`` with ``text`` encoded as ``encoding``, all or nothing; return its path."""
    return atomic_write_bytes(destination, text.encode(encoding), durable=durable)


def clean_leftovers(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files that a crashed writer left in ``directory``; return what was removed.

    Only files carrying modelkeep's temporary marker whose writing process is no
    longer alive are removed, so a concurrent writer is never disturbed.
    """
    removed = []
    for path in Path(directory).glob(f".*{TEMP_MARKER}*"):
        pid_text = path.name.rsplit(TEMP_MARKER, 1)[-1].split("-", 1)[0]
        if pid_text.isdigit() and _process_alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

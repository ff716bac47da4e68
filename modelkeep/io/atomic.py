"""Atomic, durable file commits on a local disk: the only way modelkeep writes a local destination.

A write goes to a temporary name in the destination's folder; when the caller
has written everything, the file is flushed and fsynced, renamed over the
destination (an atomic step on POSIX and Windows), and the folder is fsynced so
the rename itself survives a power cut. If anything fails before the rename,
the temporary file is removed and the destination is exactly as it was.

A replaced file keeps its permission bits (and, where allowed, its owner):
a ``0600`` file stays ``0600``. Each write first removes the temporaries that
dead writers left in the destination's folder (the writer's PID and host are
in the temporary's name; a live writer's temporary is never touched), so a
killed save does not leave a large hidden file for ever. A destination that
cannot be written (a folder in the way, a folder without write permission, a
read-only file system) raises ``StorageError`` naming the destination, never
the temporary, and the previous file stays as it was.

Nothing else in modelkeep opens a destination for writing; everything goes
through ``atomic_write`` (or its one-call forms ``atomic_write_bytes``,
``atomic_write_text`` and ``atomic_write_image``, the last bypassing the page
cache), directly or through ``committer.RenameCommitter``.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import functools
import hashlib
import os
import secrets
import socket
import stat
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import StorageError

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


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    """Six hex digits naming this host, so a temporary of a writer on another host sharing the folder is spared."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def temporary_name(destination: Path) -> Path:
    """A unique temporary path beside ``destination`` (same folder, so rename is atomic).

    ``.<name>.modelkeep-tmp-<pid>-<host>-<random>``: the writer's PID and host tag let
    ``clean_leftovers`` tell a dead writer's temporary from a live one's.
    """
    return destination.with_name(
        f".{destination.name}{TEMP_MARKER}{os.getpid()}-{_host_tag()}-{secrets.token_hex(4)}")


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
    A destination that cannot be written raises ``StorageError`` before anything is written.
    """
    destination = Path(destination)
    if destination.is_dir():
        raise StorageError(f"cannot write {destination}: it is a folder; give a file name inside it "
                           f"(such as {destination / 'model.safetensors'}) or another path", errno=_errno.EISDIR)
    with contextlib.suppress(OSError):
        clean_leftovers(destination.parent)
    temp = temporary_name(destination)
    try:
        handle = open(temp, "xb")
    except OSError as exc:
        raise _storage_error(destination, exc) from exc
    try:
        yield handle
        handle.flush()
        _keep_mode_and_owner(handle.fileno(), destination)
        if durable:
            os.fsync(handle.fileno())
        handle.close()
        try:
            os.replace(temp, destination)
        except OSError as exc:
            raise _storage_error(destination, exc) from exc
    except BaseException:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if durable:
        fsync_directory(destination.parent)


#: ``atomic_write_image`` writes in whole blocks of this many bytes, from a buffer aligned to it (O_DIRECT's rule).
DIRECT_ALIGN = 4096
_DIRECT_CHUNK = 64 << 20


def atomic_write_image(destination: str | os.PathLike[str], image: memoryview, length: int, *,
                       durable: bool = True) -> Path:
    """Replace ``destination`` with ``image[:length]``, all or nothing (``atomic_write``); return its path.

    Where the file system allows it (Linux ``O_DIRECT``) the bytes go from
    ``image`` to the disk without being copied into the page cache first: for a
    large file that copy, and the write-back it leaves to the kernel, is most of
    the CPU a write costs. That needs ``image`` to start on a ``DIRECT_ALIGN``
    boundary and to hold ``length`` rounded up to ``DIRECT_ALIGN`` bytes (the
    padding is written, then cut off); anything else, or a file system that
    refuses, gets an ordinary write. Either way the temporary file is fsynced
    before the rename when ``durable``, exactly as with ``atomic_write``.
    """
    destination = Path(destination)
    with atomic_write(destination, durable=durable) as handle:
        if not _write_direct(handle.name, image, length):
            handle.seek(0)
            handle.write(image[:length])
            handle.truncate()
    return destination


def _write_direct(path: str | os.PathLike[str], image: memoryview, length: int) -> bool:
    """Write ``image[:length]`` to ``path`` with O_DIRECT; False (nothing promised written) where that fails."""
    flag = getattr(os, "O_DIRECT", 0)
    padded = -(-length // DIRECT_ALIGN) * DIRECT_ALIGN
    if not flag or length <= 0 or image.nbytes < padded or image.readonly or _address(image) % DIRECT_ALIGN:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | flag)
    except OSError:  # EINVAL: a file system without O_DIRECT (tmpfs before Linux 6.6, some FUSE mounts)
        return False
    try:
        offset = 0
        view = image.cast("B")
        while offset < padded:
            try:
                written = os.pwrite(fd, view[offset:min(offset + _DIRECT_CHUNK, padded)], offset)
            except OSError as exc:
                if exc.errno == _errno.EINVAL:  # the device wants a larger alignment: write the ordinary way
                    return False
                raise
            if written <= 0 or written % DIRECT_ALIGN:
                return False  # a short write left the rest unaligned: the ordinary way rewrites it all
            offset += written
        os.ftruncate(fd, length)
    finally:
        os.close(fd)
    return True


def _address(buffer: memoryview) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def _keep_mode_and_owner(fd: int, destination: Path) -> None:
    """Give the new file the permission bits (and, where allowed, the owner) of the file it replaces."""
    try:
        old = os.stat(destination)
    except OSError:
        return  # nothing replaced: the new file keeps the mode the umask gave it
    if not stat.S_ISREG(old.st_mode):
        return
    with contextlib.suppress(OSError, AttributeError):
        new = os.fstat(fd)
        if (new.st_uid, new.st_gid) != (old.st_uid, old.st_gid):
            os.fchown(fd, old.st_uid, old.st_gid)  # only root (or the owner, for the group) may
    with contextlib.suppress(OSError, AttributeError):
        os.fchmod(fd, stat.S_IMODE(old.st_mode))


def _storage_error(destination: Path, exc: OSError) -> StorageError:
    """What went wrong writing ``destination`` and how to fix it, naming the destination, not the temporary."""
    folder = destination.parent
    why = {
        _errno.EACCES: f"the folder {folder} is not writable ({exc.strerror}); fix its permissions or "
                       "choose another path",
        _errno.EPERM: f"the folder {folder} is not writable ({exc.strerror}); fix its permissions or "
                      "choose another path",
        _errno.EROFS: f"the folder {folder} is on a read-only file system; choose a path on a writable one",
        _errno.ENOENT: f"the folder {folder} does not exist; create it first or choose another path",
        _errno.ENOTDIR: f"{folder} is not a folder; choose another path",
        _errno.EISDIR: "it is a folder; give a file name inside it or another path",
        _errno.ENOSPC: "the disk is full; free some space or choose another disk",
        _errno.EDQUOT: "the disk quota is exhausted; free some space or choose another disk",
    }.get(exc.errno or 0, f"{exc.strerror or exc}; check the path and its folder")
    return StorageError(f"cannot write {destination}: {why}", errno=exc.errno)


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
    """Remove temporary files that dead writers left in ``directory``; return what was removed.

    Only files carrying modelkeep's temporary marker whose writing process is no
    longer alive on this host are removed, so a concurrent writer is never
    disturbed (nor one on another host sharing the folder).
    """
    removed = []
    host = _host_tag()
    try:
        with os.scandir(directory) as entries:
            leftovers = [Path(entry.path) for entry in entries
                         if entry.name.startswith(".") and TEMP_MARKER in entry.name]
    except FileNotFoundError:
        return []
    for path in leftovers:
        parts = path.name.rsplit(TEMP_MARKER, 1)[-1].split("-")
        if not parts[0].isdigit():
            continue  # not a name this module made
        if len(parts) >= 3 and parts[1] != host:
            continue  # a writer on another host: its life cannot be checked from here
        if process_alive(int(parts[0])):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True

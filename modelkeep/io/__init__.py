"""Durable I/O: the one layer of modelkeep that changes what is stored.

* ``atomic`` — ``atomic_write`` (temporary name, fsync, rename, fsync of the
  folder), ``atomic_write_bytes``/``atomic_write_text`` for whole small files,
  and ``clean_leftovers`` for what a crashed writer left;
* ``committer`` — the ``Committer`` protocol (an item becomes visible whole or
  not at all) with ``RenameCommitter`` for local folders and
  ``MarkerCommitter`` for fsspec stores that cannot rename (a commit marker is
  written last, as Orbax does on object stores);
* ``lock`` — ``FolderLock``, the advisory lock (``flock``) that keeps a second
  process out of a run or checkpoint folder in use;
* ``blobstore`` — the content-addressed ``BlobStore`` protocol (SHA-256 hex
  digests: ``has``/``put``/``get``, ``list``/``delete`` for garbage collection)
  with ``LocalBlobStore`` and ``FsspecBlobStore``.

Nothing outside this package opens a destination for writing, renames, moves
or deletes a stored file. This package imports nothing from modelkeep except
``errors`` and ``_lazy``, never imports torch, and imports fsspec only when a store on it is
used, so ``modelkeep inspect`` does not pay for it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "atomic_write": "atomic", "atomic_write_bytes": "atomic", "atomic_write_text": "atomic",
    "clean_leftovers": "atomic", "fsync_directory": "atomic",
    "FolderLock": "lock", "FolderLockedError": "lock", "StaleLockWarning": "lock",
    "Committer": "committer", "MarkerCommitter": "committer", "RenameCommitter": "committer",
    "BlobStore": "blobstore", "FsspecBlobStore": "blobstore", "LocalBlobStore": "blobstore",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from .atomic import atomic_write, atomic_write_bytes, atomic_write_text, clean_leftovers, fsync_directory
    from .blobstore import BlobStore, FsspecBlobStore, LocalBlobStore
    from .committer import Committer, MarkerCommitter, RenameCommitter
    from .lock import FolderLock, FolderLockedError, StaleLockWarning

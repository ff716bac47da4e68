"""Content-addressed blobs: each stored under the SHA-256 of its bytes, written once, checked on every read.

A blob's name is the lowercase hex SHA-256 digest of its bytes, so the same
bytes are stored once, whoever puts them (``put`` is idempotent), and a reader
can tell a damaged or substituted blob from the real one: ``get`` hashes what
it read and refuses bytes that do not hash to the name asked for. Blobs are
kept in fan-out folders (``ab/cdef...``: the first two hex characters, then the
other 62) so no folder grows past a few thousand entries.

``LocalBlobStore`` commits by rename in a local folder; ``FsspecBlobStore``
commits by a marker written last, for object stores (S3, GCS) that cannot
rename. Every write goes through a ``committer`` (never around it), so a crash
leaves either the whole blob or nothing a reader would take for it.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from typing import Any, BinaryIO, Protocol, Union

from ..errors import ConfigError, FormatError, IntegrityError, ModelNotFoundError
from .committer import COPY_CHUNK, MarkerCommitter, RenameCommitter

DIGEST = re.compile(r"^[0-9a-f]{64}$")
#: ``get`` refuses a blob larger than this unless told otherwise (it returns the bytes in memory).
DEFAULT_MAX_GET_BYTES = 1 << 30

Data = Union[bytes, bytearray, memoryview, BinaryIO]


class BlobStore(Protocol):
    """Immutable blobs keyed by the SHA-256 hex digest of their bytes.

    Call order: ``put`` returns the digest (writing only when the blob is not
    there yet); ``has`` and ``get`` read by digest; ``list`` and ``delete``
    serve garbage collection (list every digest, delete those no longer
    referenced). Five methods, where the style is one to three: a registry's
    garbage collector needs the last two, and readers and writers need the first three.

    A worked example, a store in a dict (a real one must also make ``put``
    atomic; here a dict assignment is)::

        class DictBlobStore:
            def __init__(self):
                self.blobs = {}

            def has(self, digest):
                return digest in self.blobs

            def put(self, data, *, digest=None):
                data = bytes(data if not hasattr(data, "read") else data.read())
                actual = hashlib.sha256(data).hexdigest()
                if digest is not None and digest != actual:
                    raise IntegrityError(f"the bytes hash to {actual}, not {digest}")
                self.blobs.setdefault(actual, data)
                return actual

            def get(self, digest, *, max_bytes=DEFAULT_MAX_GET_BYTES):
                return self.blobs[digest]

            def list(self):
                return sorted(self.blobs)

            def delete(self, digest):
                self.blobs.pop(digest, None)
    """

    def has(self, digest: str) -> bool:
        """Whether a complete blob with this digest is stored."""
        ...

    def put(self, data: Data, *, digest: str | None = None) -> str:
        """Store ``data`` (bytes or a binary stream) unless already there; return its digest.

        With ``digest``, the bytes must hash to it (``IntegrityError`` otherwise,
        and nothing is stored).
        """
        ...

    def get(self, digest: str, *, max_bytes: int = DEFAULT_MAX_GET_BYTES) -> bytes:
        """The blob's bytes, after checking they hash to ``digest``; ``ModelNotFoundError`` when absent."""
        ...

    def list(self) -> list[str]:
        """The digests of every stored blob, sorted."""
        ...

    def delete(self, digest: str) -> None:
        """Remove a blob; removing a missing blob is not an error."""
        ...


def check_digest(digest: str) -> str:
    """``digest`` if it is 64 lowercase hex characters; else ``ConfigError`` saying what was received."""
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise ConfigError(f"a blob digest is the 64 lowercase hex characters of a SHA-256, got {str(digest)[:80]!r}"
                          + (" (drop the 'sha256:' prefix)" if str(digest).startswith("sha256:") else ""))
    return digest


def blob_name(digest: str) -> str:
    """Where a blob lives inside its store: ``ab/cdef...``."""
    check_digest(digest)
    return f"{digest[:2]}/{digest[2:]}"


class _CommittedBlobStore:
    """A ``BlobStore`` over a committer (``RenameCommitter`` or ``MarkerCommitter``)."""

    committer: Any

    @property
    def location(self) -> str:
        return self.committer.location

    def has(self, digest: str) -> bool:
        return self.committer.is_committed(blob_name(digest))

    def put(self, data: Data, *, digest: str | None = None) -> str:
        if isinstance(data, (bytes, bytearray, memoryview)):
            actual = hashlib.sha256(data).hexdigest()
            _expect(digest, actual)
            if not self.has(actual):
                with self.committer.writing(blob_name(actual)) as out:
                    out.write(data)
            return actual
        if digest is not None:
            # The name is known: write through the committer as the bytes are hashed; a mismatch
            # raises inside the block, so nothing is committed.
            check_digest(digest)
            if self.has(digest):
                _drain_and_check(data, digest)
                return digest
            with self.committer.writing(blob_name(digest)) as out:
                _expect(digest, _copy_hashing(data, out))
            return digest
        # The name is known only at the end: hash into a local spool, then commit from it.
        with tempfile.TemporaryFile(dir=getattr(self.committer, "scratch", None)) as spool:
            actual = _copy_hashing(data, spool)
            if not self.has(actual):
                spool.seek(0)
                with self.committer.writing(blob_name(actual)) as out:
                    shutil.copyfileobj(spool, out, COPY_CHUNK)
        return actual

    def get(self, digest: str, *, max_bytes: int = DEFAULT_MAX_GET_BYTES) -> bytes:
        try:
            data = self.committer.read(blob_name(digest), max_bytes + 1)
        except (FileNotFoundError, ModelNotFoundError):
            raise ModelNotFoundError(f"no blob {digest} in {self.location}") from None
        if len(data) > max_bytes:
            raise FormatError(f"blob {digest} in {self.location} is larger than max_bytes={max_bytes:,}; "
                                 "pass a larger max_bytes to read it")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(f"blob {digest} in {self.location} is damaged: its bytes hash to {actual}. "
                                 "Delete it and put the original bytes again")
        return data

    def list(self) -> list[str]:
        digests = (name.replace("/", "", 1) for name in self.committer.names(recursive=True)
                   if len(name) == 65 and name[2] == "/")
        return sorted(digest for digest in digests if DIGEST.match(digest))

    def delete(self, digest: str) -> None:
        self.committer.delete(blob_name(digest))

    def clean(self, **options: Any) -> list[str]:
        """Remove what writers that died mid-put left (see the committer's ``clean``)."""
        return self.committer.clean(**options)


class LocalBlobStore(_CommittedBlobStore):
    """Blobs in a local folder, each committed by rename (temporary name, fsync, rename, fsync of the folder)."""

    def __init__(self, directory: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.committer = RenameCommitter(directory, durable=durable)


class FsspecBlobStore(_CommittedBlobStore):
    """Blobs on an fsspec filesystem (``s3://bucket/blobs``, ``memory://blobs``), each committed by a marker written last."""

    def __init__(self, location: str, *, filesystem: Any = None,
                 scratch: str | os.PathLike[str] | None = None) -> None:
        self.committer = MarkerCommitter(location, filesystem=filesystem, scratch=scratch)


def _expect(digest: str | None, actual: str) -> None:
    if digest is not None and check_digest(digest) != actual:
        raise IntegrityError(f"the bytes given hash to {actual}, not to the digest {digest} they were put under; "
                             "nothing was stored")


def _copy_hashing(source: BinaryIO, out: BinaryIO) -> str:
    hasher = hashlib.sha256()
    while chunk := source.read(COPY_CHUNK):
        hasher.update(chunk)
        out.write(chunk)
    return hasher.hexdigest()


def _drain_and_check(source: BinaryIO, digest: str) -> None:
    hasher = hashlib.sha256()
    while chunk := source.read(COPY_CHUNK):
        hasher.update(chunk)
    _expect(digest, hasher.hexdigest())

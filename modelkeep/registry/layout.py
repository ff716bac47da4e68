"""The registry's storage layout, shared by every backend: a version is a manifest naming SHA-256 blobs.

A modelkeep file (a safetensors file: 8-byte header length, JSON header, tensor
data) is split into content-addressed blobs:

- the *header blob*: bytes ``[0, data_start)`` -- the length prefix and the JSON
  header with its metadata (manifest, integrity hashes);
- one *segment blob* per tensor, the tensor's bytes exactly as in the file, and
  one per gap between tensors should a file have any, in file order. A tensor
  larger than ``SEGMENT_BYTES`` is cut into parts of that size (each its own
  blob), so no step of a push or a pull holds more than one part in memory.

The version manifest (``LAYOUT``, canonical JSON: sorted keys, no spaces) lists
them with their sizes, plus the size and SHA-256 of the whole file, and the
digest of an optional model card. Two versions that hold the same tensor bytes
(a fine-tune with a frozen backbone, a re-save with a new card) name the same
segment blobs, so a store keeps them once. The manifest is itself stored as a
blob; its digest is the version id.

``rebuild`` concatenates the blobs through ``atomic_write``: every blob is
checked against its digest by the store, every size against the manifest, and
the whole file against its SHA-256 before it is renamed into place, so a damaged
blob leaves nothing at the destination and the error names the digest that
failed. This module never unpickles and reads manifests with ``loads_bounded``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

from ..artifact.format import loads_bounded, read_header
from ..errors import ConfigError, FormatError, IntegrityError
from ..io.atomic import atomic_write
from ..io.blobstore import BlobStore, check_digest

LAYOUT = "modelkeep.registry.version/1"
#: A manifest larger than this is refused before parsing (a file of a million tensors stays far below).
MAX_MANIFEST_BYTES = 256 << 20
#: A model card (Markdown) larger than this is refused when pushed and when read.
MAX_CARD_BYTES = 16 << 20
#: Tensors larger than this are stored as several blobs of at most this many bytes.
SEGMENT_BYTES = 64 << 20
#: Remote pushes and pulls read at most this many bytes ahead of what the store has taken or the file has written.
IN_FLIGHT_BYTES = 256 << 20
#: ``progress(nbytes)`` is told of each blob's bytes as they are sent or received.
Progress = Callable[[int], None]


def _segments(header: Any) -> Iterator[tuple[int, int, str | None]]:
    """``(begin, end, tensor name or None for a gap)`` covering the data section, in file order."""
    cursor = 0
    data_size = header.file_size - header.data_start
    for entry in sorted(header.tensors.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin > cursor:
            yield cursor, entry.begin, None
        if entry.end > max(cursor, entry.begin) or entry.nbytes == 0:
            yield max(cursor, entry.begin), entry.end, entry.name
        cursor = max(cursor, entry.end)
    if data_size > cursor:
        yield cursor, data_size, None


def _read_exact(handle: Any, offset: int, size: int, path: Path) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise FormatError(f"{path} changed while it was read into the registry; try again")
    return data


def _parts(begin: int, end: int, size: int) -> Iterator[tuple[int, int]]:
    if end - begin <= size:
        yield begin, end
        return
    for start in range(begin, end, size):
        yield start, min(start + size, end)


def _ordered(work: Callable[[Any], Any], items: Iterable[tuple[int, Any]], workers: int) -> Iterator[Any]:
    """``work(item)`` for each ``(nbytes, item)``, results in order; with ``workers`` > 1 that many run at once
    (remote stores: one request each), with at most ``IN_FLIGHT_BYTES`` (or one item) read ahead."""
    if workers <= 1:
        for _, item in items:
            yield work(item)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="modelkeep-blobs")
    pending: deque[tuple[int, Future[Any]]] = deque()
    in_flight = 0
    try:
        for nbytes, item in items:
            while pending and (len(pending) >= 2 * workers or in_flight + nbytes > IN_FLIGHT_BYTES):
                done, future = pending.popleft()
                in_flight -= done
                yield future.result()
            pending.append((nbytes, pool.submit(work, item)))
            in_flight += nbytes
        while pending:
            yield pending.popleft()[1].result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def split(path: str | os.PathLike[str], store: BlobStore, *, card: str | None = None,
          progress: Progress | None = None, segment_bytes: int = SEGMENT_BYTES, workers: int = 1) -> dict[str, Any]:
    """Put ``path``'s blobs (and ``card``'s) into ``store``; return the version manifest (not yet stored).

    A blob already in the store is not sent again (``put`` is idempotent), so a push that was
    interrupted resumes where it stopped. ``workers`` puts run at once (for remote stores)."""
    card_bytes = card.encode("utf-8") if card is not None else None
    if card_bytes is not None and len(card_bytes) > MAX_CARD_BYTES:
        raise ConfigError(f"the model card is {len(card_bytes):,} bytes; a card is at most {MAX_CARD_BYTES:,}")
    header = read_header(path)
    path = header.path
    whole = hashlib.sha256()
    with open(path, "rb") as handle:
        head = _read_exact(handle, 0, header.data_start, path)
        whole.update(head)
        manifest: dict[str, Any] = {
            "layout": LAYOUT,
            "size": header.file_size,
            "header": {"digest": store.put(head), "size": len(head)},
            "segments": [],
            "card": store.put(card_bytes) if card_bytes is not None else None,
        }
        if progress is not None:
            progress(len(head))

        def pieces() -> Iterator[tuple[int, tuple[bytes, str | None]]]:
            for begin, end, name in _segments(header):
                for start, stop in _parts(begin, end, segment_bytes):
                    data = _read_exact(handle, header.data_start + start, stop - start, path)
                    whole.update(data)
                    yield len(data), (data, name)

        def put(piece: tuple[bytes, str | None]) -> dict[str, Any]:
            data, name = piece
            return {"digest": store.put(data), "size": len(data), "tensor": name}

        for segment in _ordered(put, pieces(), workers):
            manifest["segments"].append(segment)
            if progress is not None:
                progress(segment["size"])
        if handle.read(1):
            raise FormatError(f"{path} grew while it was read into the registry; try again")
    manifest["sha256"] = whole.hexdigest()
    return manifest


def encode(manifest: dict[str, Any]) -> bytes:
    """The canonical bytes of a manifest: the same manifest always encodes (and so hashes) the same."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def version_id(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(encode(manifest)).hexdigest()


def decode(data: bytes, *, what: str = "version manifest") -> dict[str, Any]:
    """Parse and check a manifest read from a store; anything malformed is a ``FormatError``."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{what} is {len(data):,} bytes; the limit is {MAX_MANIFEST_BYTES:,}")
    doc = loads_bounded(data, what)
    if not isinstance(doc, dict) or doc.get("layout") != LAYOUT:
        found = doc.get("layout") if isinstance(doc, dict) else type(doc).__name__
        raise FormatError(f"{what} is not a {LAYOUT} manifest (layout: {str(found)[:60]!r})")
    try:
        blobs = [doc["header"], *doc["segments"]]
        for blob in blobs:
            check_digest(blob["digest"])
            if not isinstance(blob["size"], int) or blob["size"] < 0:
                raise FormatError(f"{what}: blob {blob['digest']} has a bad size {str(blob['size'])[:40]!r}")
        if doc["card"] is not None:
            check_digest(doc["card"])
        check_digest(doc["sha256"])
        if sum(blob["size"] for blob in blobs) != doc["size"]:
            raise FormatError(f"{what}: the blob sizes do not add up to the file size {doc['size']}")
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{what} is missing or mistypes a field ({str(exc)[:60]})") from None
    return doc


def blobs_of(manifest: dict[str, Any]) -> set[str]:
    """Every blob digest a manifest references (header, segments, card)."""
    digests = {manifest["header"]["digest"], *(seg["digest"] for seg in manifest["segments"])}
    if manifest.get("card"):
        digests.add(manifest["card"])
    return digests


def rebuild(manifest: dict[str, Any], store: BlobStore, out: str | os.PathLike[str], *,
            durable: bool = True, progress: Progress | None = None, workers: int = 1) -> Path:
    """Write the byte-identical file ``manifest`` describes to ``out``, verifying every digest on the way
    (``workers`` blobs fetched at once, written in order)."""
    out = Path(out)
    whole = hashlib.sha256()
    blobs = [manifest["header"], *manifest["segments"]]

    def get(blob: dict[str, Any]) -> bytes:
        return store.get(blob["digest"], max_bytes=max(blob["size"], 1))

    with atomic_write(out, durable=durable) as handle:
        for blob, data in zip(blobs, _ordered(get, ((b["size"], b) for b in blobs), workers)):
            if len(data) != blob["size"]:
                raise IntegrityError(f"blob {blob['digest']} holds {len(data):,} bytes; "
                                     f"the manifest says {blob['size']:,}")
            whole.update(data)
            handle.write(data)
            if progress is not None:
                progress(len(data))
        if whole.hexdigest() != manifest["sha256"]:
            raise IntegrityError(f"the rebuilt file hashes to {whole.hexdigest()}, "
                                 f"not {manifest['sha256']} as its manifest says; nothing was written")
    return out


def read_card(manifest: dict[str, Any], store: BlobStore) -> str | None:
    if not manifest.get("card"):
        return None
    return store.get(manifest["card"], max_bytes=MAX_CARD_BYTES).decode("utf-8", errors="replace")

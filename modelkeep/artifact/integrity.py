"""Integrity: the hashes a modelkeep file records about itself, and how they are checked.

The ``modelkeep.integrity`` metadata value (docs/format.md, "Integrity") holds
the xxh3-128 hash of every other metadata value, of every tensor's bytes and of
the tensor layout (names, dtypes, shapes). The layout and metadata hashes are
checked from the header alone; tensor hashes need the data and are checked one
tensor at a time as it is read, or all at once by ``verify_file``.

This module never imports torch: ``modelkeep inspect --verify`` uses it.
"""
from __future__ import annotations

import json
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable

import xxhash

from ..errors import FormatError, IntegrityError
from .format import KEY_INTEGRITY, RESERVED_PREFIX, Header, TensorEntry, parse_json_metadata

HASH_ALGORITHM = "xxh3-128"
DIGEST_CHARS = 32
_HEX = frozenset("0123456789abcdef")


def hash_bytes(data: bytes | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def layout_digest(entries: Iterable[tuple[str, str, tuple[int, ...]]]) -> str:
    """The hash of the tensor layout: ``[[name, dtype, shape], ...]`` sorted by name, as compact JSON."""
    rows = sorted([name, dtype, list(shape)] for name, dtype, shape in entries)
    return hash_bytes(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def header_layout_digest(header: Header) -> str:
    return layout_digest((e.name, e.dtype, e.shape) for e in header.tensors.values())


def content_hash(header: Header, integrity: dict[str, Any] | None = None) -> str | None:
    """The model's content hash: what ``lineage.parent.content_hash`` of a fine-tuned child records.

    It is the xxh3-128 hash of the sorted ``[[name, tensor_hash], ...]`` of the
    weights (tensors outside reserved sections), so it identifies the learned
    values and survives metadata edits and re-saves. Read from the header alone.
    """
    integrity = integrity if integrity is not None else read_integrity(header)
    if integrity is None:
        return None
    rows = sorted([name, digest] for name, digest in integrity["tensors"].items()
                  if not name.startswith(RESERVED_PREFIX))
    return f"{HASH_ALGORITHM}:" + hash_bytes(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def read_integrity(header: Header) -> dict[str, Any] | None:
    """The decoded, shape-checked integrity document, or ``None`` when the file has none."""
    doc = parse_json_metadata(header, KEY_INTEGRITY)
    if doc is None:
        return None
    if not isinstance(doc, dict) or doc.get("algorithm") != HASH_ALGORITHM:
        algorithm = doc.get("algorithm") if isinstance(doc, dict) else None
        raise FormatError(
            f"{header.path}: {KEY_INTEGRITY!r} is malformed or uses an unknown hash algorithm "
            f"({str(algorithm)[:40]!r}; this modelkeep knows {HASH_ALGORITHM!r})"
        )
    for section in ("tensors", "metadata"):
        table = doc.get(section)
        if not isinstance(table, dict) or not all(_is_digest(v) for v in table.values()):
            raise FormatError(f"{header.path}: {KEY_INTEGRITY!r} section {section!r} must map names to hex digests")
    if "layout" in doc and not _is_digest(doc["layout"]):
        raise FormatError(f"{header.path}: {KEY_INTEGRITY!r} 'layout' must be a hex digest")
    return doc


def require_integrity(header: Header) -> dict[str, Any]:
    """The integrity record a verifying reader needs; ``IntegrityError`` when the file has none.

    The one rule of every verifying reader (``load``, ``load_weights``,
    ``read_tensors``, ``TensorFile``, ``verify_file``): a file without
    ``modelkeep.integrity`` cannot be verified, so it is refused, never read as if it had been.
    """
    integrity = read_integrity(header)
    if integrity is None:
        raise IntegrityError(unverifiable_message(header.path))
    return integrity


def unverifiable_message(path: object) -> str:
    """What to say about a file without hashes: the API argument that reads it anyway (CLI flags vary by command)."""
    return (f"{path} records no integrity hashes ({KEY_INTEGRITY!r} is absent), so it cannot be verified; "
            "if you trust it, read it with verify=False (load, load_weights, read_tensors)")


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == DIGEST_CHARS and set(value) <= _HEX


def verify_header(header: Header, integrity: dict[str, Any]) -> None:
    """Check everything that needs no tensor data: metadata hashes, the tensor list and the layout."""
    recorded = integrity["metadata"]
    present = {k for k in header.metadata if k != KEY_INTEGRITY}
    if set(recorded) != present:
        changed = sorted(present ^ set(recorded))[:5]
        raise IntegrityError(f"{header.path}: metadata keys {changed} were added or removed after writing")
    for key, digest in recorded.items():
        if hash_bytes(header.metadata[key].encode("utf-8")) != digest:
            raise IntegrityError(f"{header.path}: metadata {key!r} does not match its recorded hash; the file was altered")
    changed = set(header.tensors) ^ set(integrity["tensors"])
    if changed:
        raise IntegrityError(f"{header.path}: tensors {sorted(changed)[:5]} were added or removed after writing")
    if "layout" in integrity and header_layout_digest(header) != integrity["layout"]:
        raise IntegrityError(
            f"{header.path}: a tensor's dtype or shape was changed after writing (the layout hash does not match)"
        )


def _tensor_mismatch(header: Header, entry: TensorEntry) -> IntegrityError:
    return IntegrityError(
        f"{header.path}: tensor {entry.name!r} does not match its recorded hash; the file is corrupt. "
        "Restore it from a good copy"
    )


def verify_tensor_bytes(header: Header, integrity: dict[str, Any], entry: TensorEntry, data: memoryview) -> None:
    if hash_bytes(data) != integrity["tensors"][entry.name]:
        raise _tensor_mismatch(header, entry)


#: Below this many tensor bytes a whole-file check hashes in the calling thread (threads cost more than they save).
PARALLEL_MIN_BYTES = 32 << 20
#: At most this many hashing threads; each hashes whole tensors (a tensor's hash is one xxh3-128 over its bytes).
MAX_HASH_THREADS = 8
#: Hash in a pool only with at least this many usable CPUs. Hashing runs at memory bandwidth; on a
#: 2-CPU machine a second hashing thread measured slower than one (it mostly contends for the core
#: and the memory bus with the caller and other processes).
MIN_PARALLEL_CPUS = 4


def hash_threads(jobs: int, nbytes: int) -> int:
    """How many threads a whole-file check of ``jobs`` tensors (``nbytes`` in all) should hash with."""
    if nbytes < PARALLEL_MIN_BYTES or jobs < 2:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if cpus < MIN_PARALLEL_CPUS:
        return 1
    return max(1, min(cpus, MAX_HASH_THREADS, jobs))


def verify_tensors(header: Header, integrity: dict[str, Any], entries: Iterable[TensorEntry], buffer: Any) -> int:
    """Check the recorded hash of every entry against its bytes in ``buffer`` (the whole file); return the bytes checked.

    Large checks hash in a per-call thread pool (xxhash releases the GIL), largest tensors first
    so the biggest one does not finish last alone; the pool is shut down before this returns.
    On a mismatch, ``IntegrityError`` names the first corrupt tensor in ``entries`` order, as a
    serial check would.
    """
    entries = list(entries)
    recorded = integrity["tensors"]
    whole = memoryview(buffer)

    def matches(entry: TensorEntry) -> bool:
        start = header.data_start + entry.begin
        view = whole[start:start + entry.nbytes]
        try:
            return hash_bytes(view) == recorded[entry.name]
        finally:
            view.release()

    try:
        total = sum(entry.nbytes for entry in entries)
        threads = hash_threads(len(entries), total)
        if threads <= 1:
            for entry in entries:
                if not matches(entry):
                    raise _tensor_mismatch(header, entry)
            return total
        order = sorted(range(len(entries)), key=lambda i: -entries[i].nbytes)
        with ThreadPoolExecutor(threads, thread_name_prefix="modelkeep-verify") as pool:
            results = dict(zip(order, pool.map(lambda i: matches(entries[i]), order)))
        for i, entry in enumerate(entries):
            if not results[i]:
                raise _tensor_mismatch(header, entry)
        return total
    finally:
        whole.release()


@dataclass(frozen=True)
class VerifyReport:
    tensors: int
    tensor_bytes: int
    metadata_values: int
    content_hash: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"verified": True, "tensors": self.tensors, "tensor_bytes": self.tensor_bytes,
                "metadata_values": self.metadata_values, "content_hash": self.content_hash}


def verify_file(header: Header) -> VerifyReport:
    """Check every hash of a file (metadata, layout, every tensor); raise ``IntegrityError`` on the first mismatch."""
    integrity = require_integrity(header)
    verify_header(header, integrity)
    total = 0
    if header.file_size > header.data_start:
        with open(header.path, "rb") as handle:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                if len(mapped) != header.file_size:
                    raise FormatError(f"{header.path} changed size while being verified")
                total = verify_tensors(header, integrity, header.tensors.values(), mapped)
    return VerifyReport(len(header.tensors), total, len(integrity["metadata"]), content_hash(header, integrity))

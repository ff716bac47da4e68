"""Read TensorFlow's tensor-bundle checkpoints (``variables.index`` + ``variables.data-*``) without TensorFlow.

The ``.index`` file is a LevelDB-style sorted table: a 48-byte footer (the metaindex and index block handles as
varints, padded, then the magic number 0xdb4775248b80fb57), blocks of prefix-compressed ``key -> value``
entries ending in restart points, each block followed by a compression byte and a masked CRC-32C. The empty key
holds a ``BundleHeaderProto`` (number of shards, endianness); every other key a ``BundleEntryProto``: the
tensor's dtype, shape, and where its bytes are (shard, offset, size) with their masked CRC-32C. Tensor bytes
live in ``<prefix>.data-SSSSS-of-NNNNN`` in host order (we accept little-endian bundles only).

Everything declared is checked before anything is allocated: the index size, block handles, key and value
lengths, each tensor's shape against ``ReaderLimits.max_elements`` and its byte size against the dtype and the
shard file's real size. Checksums are verified (blocks and tensors). Sliced (partitioned) variables and
Snappy-compressed blocks are refused with a message.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError, IntegrityError
from . import _protowire as wire
from ._crc32c import crc32c, masked

MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
TRAILER_BYTES = 5             # compression type byte + masked CRC-32C
MAX_INDEX_BYTES = 64 << 20    # an entry takes ~50-150 bytes: room for several hundred thousand variables
MAX_ENTRIES = 500_000         # each costs a few hundred bytes of Python objects once parsed
MAX_SHARDS = 100_000
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"

# TensorFlow DataType enum -> numpy dtype name (bfloat16 is widened to float32 exactly, see BundleReader.read)
DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 9: "int64", 10: "bool",
          14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64", 8: "complex64",
          18: "complex128"}
DT_STRING = 7


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor of a bundle is and what it should be."""

    key: str
    dtype: int            # TensorFlow's DataType number
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int           # masked CRC-32C of the bytes, 0 when the writer left it out

    @property
    def dtype_name(self) -> str:
        return "string" if self.dtype == DT_STRING else DTYPES.get(self.dtype, f"DataType {self.dtype}")


class BundleReader:
    """A tensor bundle at ``prefix`` (e.g. ``saved_model_dir/variables/variables``), its index read eagerly.

    ``entries`` maps every key to its ``BundleEntry``; ``read(key)`` returns a numpy array; ``read_strings(key)``
    the elements of a string tensor (TensorFlow stores the object graph of a checkpoint as one).
    """

    def __init__(self, prefix: str | Path, limits: Any) -> None:
        self.prefix = Path(prefix)
        self.limits = limits
        index = self.prefix.with_name(self.prefix.name + ".index")
        raw = _read_bounded(index, MAX_INDEX_BYTES, "tensor-bundle index")
        table = dict(iter_table(raw, index.name))
        if b"" not in table:
            raise FormatError(f"{index.name}: no bundle header (empty key); not a TensorFlow tensor bundle")
        self.num_shards = _parse_header(table.pop(b""), index.name)
        self.entries = {}
        for key, value in table.items():
            entry = _parse_entry(key, value, index.name)
            if entry.shard >= self.num_shards:
                raise FormatError(f"{index.name}: {entry.key!r} is in shard {entry.shard} "
                                  f"but the bundle has {self.num_shards}")
            self.entries[entry.key] = entry
        self._check_shard_totals(index.name)

    def _check_shard_totals(self, what: str) -> None:
        """The bytes the entries claim per shard must fit in that shard, so reading every tensor once allocates
        no more than the folder holds on disk, however the entries overlap."""
        claimed: dict[int, int] = {}
        for entry in self.entries.values():
            claimed[entry.shard] = claimed.get(entry.shard, 0) + entry.size
        for shard, total in claimed.items():
            path = self.shard_path(shard)
            if path.is_file() and total > path.stat().st_size:
                raise FormatError(f"{what}: the entries claim {total} bytes of {path.name}, which has "
                                  f"{path.stat().st_size}; the bundle is damaged or hostile")

    def shard_path(self, shard: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, key: str) -> Any:
        """The tensor ``key`` as a numpy array (bfloat16 widened to float32, which is exact)."""
        import numpy as np

        entry = self._entry(key)
        if entry.dtype not in DTYPES:
            raise FormatError(f"tensor-bundle: {key!r} has unsupported dtype {entry.dtype_name}")
        elements = math.prod(entry.shape)
        if elements > self.limits.max_elements:
            raise FormatError(f"tensor-bundle: {key!r} declares shape {list(entry.shape)} ({elements} elements), "
                              f"over ReaderLimits.max_elements={self.limits.max_elements}")
        wide = "uint16" if entry.dtype == 14 else DTYPES[entry.dtype]
        expected = elements * np.dtype(wide).itemsize
        if entry.size != expected:
            raise FormatError(f"tensor-bundle: {key!r} declares {entry.size} bytes but shape {list(entry.shape)} "
                              f"of {entry.dtype_name} needs {expected}")
        array = np.frombuffer(self._bytes(entry), dtype=wide).reshape(entry.shape)
        if entry.dtype == 14:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array

    def read_strings(self, key: str) -> list[bytes]:
        """The elements of the string tensor ``key`` (lengths as varints, a 4-byte checksum, then the bytes)."""
        entry = self._entry(key)
        if entry.dtype != DT_STRING:
            raise FormatError(f"tensor-bundle: {key!r} is {entry.dtype_name}, not a string tensor")
        count = math.prod(entry.shape)
        if count > entry.size:
            raise FormatError(f"tensor-bundle: string tensor {key!r} declares {count} elements in {entry.size} bytes")
        data = self._bytes(entry, verify=False)
        lengths, pos = [], 0
        for _ in range(count):
            length, pos = wire.read_varint(data, pos, f"tensor-bundle {key!r}")
            lengths.append(length)
        if pos + 4 + sum(lengths) != len(data):
            raise FormatError(f"tensor-bundle: string tensor {key!r} lengths do not add up to its {len(data)} bytes")
        # TensorFlow checksums each length as 4 (or, past 4 GiB, 8) little-endian bytes, not as the varints.
        crc = 0
        for length in lengths:
            crc = crc32c(length.to_bytes(4 if length <= 0xFFFFFFFF else 8, "little"), crc)
        if entry.crc32c and masked(crc32c(data[pos:], crc)) != entry.crc32c:
            raise IntegrityError(f"tensor-bundle: string tensor {key!r} fails its CRC-32C check")
        pos += 4
        strings = []
        for length in lengths:
            strings.append(bytes(data[pos:pos + length]))
            pos += length
        return strings

    def _entry(self, key: str) -> BundleEntry:
        entry = self.entries.get(key)
        if entry is None:
            raise FormatError(f"tensor-bundle: no tensor {key!r} in {self.prefix.name}.index")
        return entry

    def _bytes(self, entry: BundleEntry, *, verify: bool = True) -> bytearray:
        path = self.shard_path(entry.shard)
        try:
            shard_size = path.stat().st_size
        except OSError:
            raise FormatError(f"tensor-bundle: data shard {path.name} is missing; copy the whole variables/ "
                              f"folder") from None
        if entry.offset + entry.size > shard_size:
            raise FormatError(f"tensor-bundle: {entry.key!r} claims bytes {entry.offset}..{entry.offset + entry.size}"
                              f" of {path.name}, which has {shard_size}; the file is truncated or damaged")
        data = bytearray(entry.size)
        with path.open("rb") as handle:
            handle.seek(entry.offset)
            if handle.readinto(data) != entry.size:
                raise FormatError(f"tensor-bundle: {path.name} ended early while reading {entry.key!r}")
        if verify and entry.crc32c and masked(crc32c(data)) != entry.crc32c:
            raise IntegrityError(f"tensor-bundle: {entry.key!r} fails its CRC-32C check; {path.name} is damaged")
        return data


def iter_table(data: bytes, what: str):
    """Every ``(key, value)`` of a LevelDB-style table held in ``data``, in key order."""
    if len(data) < FOOTER_BYTES:
        raise FormatError(f"{what}: {len(data)} bytes is too short for a table footer; the file is truncated")
    footer = memoryview(data)[len(data) - FOOTER_BYTES:]
    if struct.unpack("<Q", footer[-8:])[0] != MAGIC:
        raise FormatError(f"{what}: bad magic number; not a TensorFlow tensor-bundle index (or truncated)")
    _, pos = _block_handle(footer, 0, what)   # the metaindex block: empty in tensor bundles, unused
    index_handle, _ = _block_handle(footer, pos, what)
    previous, count = None, 0
    for _, handle_bytes in _block_entries(_read_block(data, index_handle, what), what):
        handle, _ = _block_handle(handle_bytes, 0, what)
        for key, value in _block_entries(_read_block(data, handle, what), what):
            if previous is not None and key <= previous:
                raise FormatError(f"{what}: keys out of order; the file is damaged")
            previous, count = key, count + 1
            if count > MAX_ENTRIES:
                raise FormatError(f"{what}: more than {MAX_ENTRIES} entries; refusing it")
            yield key, value


def _block_handle(data: bytes | memoryview, pos: int, what: str) -> tuple[tuple[int, int], int]:
    offset, pos = wire.read_varint(data, pos, what)
    size, pos = wire.read_varint(data, pos, what)
    return (offset, size), pos


def _read_block(data: bytes, handle: tuple[int, int], what: str) -> memoryview:
    offset, size = handle
    if offset + size + TRAILER_BYTES > len(data) - FOOTER_BYTES:
        raise FormatError(f"{what}: a block at {offset} of {size} bytes lies outside the file; truncated or damaged")
    block = memoryview(data)[offset:offset + size + 1]   # contents + compression byte, as checksummed
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if masked(crc32c(block)) != stored:
        raise IntegrityError(f"{what}: a block at {offset} fails its CRC-32C check; the file is damaged")
    compression = data[offset + size]
    if compression != 0:
        name = "Snappy" if compression == 1 else f"type {compression}"
        raise FormatError(f"{what}: {name}-compressed blocks are not supported; TensorFlow's own bundle writer "
                          f"never compresses, so this index was written by something else")
    return block[:size]


def _block_entries(block: memoryview, what: str):
    if len(block) < 4:
        raise FormatError(f"{what}: a block is too short to hold its restart count")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * restarts
    if restarts < 1 or limit < 0:
        raise FormatError(f"{what}: a block declares {restarts} restart points; the file is damaged")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = wire.read_varint(block, pos, what)
        unshared, pos = wire.read_varint(block, pos, what)
        value_size, pos = wire.read_varint(block, pos, what)
        if shared > len(key) or unshared + value_size > limit - pos:
            raise FormatError(f"{what}: a block entry's lengths run past its block; the file is damaged")
        key = key[:shared] + bytes(block[pos:pos + unshared])
        pos += unshared
        yield key, bytes(block[pos:pos + value_size])
        pos += value_size


def _parse_header(value: bytes, what: str) -> int:
    fields = wire.decode(value, f"{what} header")
    shards = wire.integer(fields, 1, what)
    if not 1 <= shards <= MAX_SHARDS:
        raise FormatError(f"{what}: the bundle header declares {shards} shards")
    if wire.integer(fields, 2, what) != 0:
        raise FormatError(f"{what}: a big-endian bundle; load and re-save it on a little-endian machine")
    return shards


def _parse_entry(key: bytes, value: bytes, what: str) -> BundleEntry:
    name = key.decode("utf-8", "replace")
    label = f"{what} entry {name[:200]!r}"
    fields = wire.decode(value, label)
    if fields.get(7):
        raise FormatError(f"{label}: a sliced (partitioned) variable; re-save the model without partitioning")
    shape: list[int] = []
    shape_fields = wire.decode(wire.first(fields, 2, b""), label)   # type: ignore[arg-type]
    if wire.integer(shape_fields, 3, label):
        raise FormatError(f"{label}: a tensor of unknown rank")
    for dim in wire.messages(shape_fields, 2, label):
        size = wire.signed64(wire.integer(wire.decode(dim, label), 1, label))
        if size < 0:
            raise FormatError(f"{label}: a dimension of size {size}")
        shape.append(size)
    if len(shape) > 64:
        raise FormatError(f"{label}: {len(shape)} dimensions")
    offset = wire.signed64(wire.integer(fields, 4, label))
    size = wire.signed64(wire.integer(fields, 5, label))
    if offset < 0 or size < 0:
        raise FormatError(f"{label}: a negative offset ({offset}) or size ({size})")
    return BundleEntry(key=name, dtype=wire.integer(fields, 1, label), shape=tuple(shape),
                       shard=wire.integer(fields, 3, label), offset=offset, size=size,
                       crc32c=wire.integer(fields, 6, label))


def _read_bounded(path: Path, cap: int, what: str) -> bytes:
    try:
        size = path.stat().st_size
    except OSError:
        raise FormatError(f"{what} {path.name} is missing") from None
    if size > cap:
        raise FormatError(f"{what} {path.name} is {size} bytes, over the {cap}-byte cap for an index")
    return path.read_bytes()

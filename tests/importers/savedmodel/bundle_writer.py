"""Write tensor bundles by hand (test helper): valid ones, and ones broken in exactly one chosen way.

Follows the layout ``modelkeep.importers.tf_bundle`` reads: a LevelDB-style table (one data block, an index
block, an empty metaindex block, the 48-byte footer) of ``BundleHeaderProto`` / ``BundleEntryProto`` values,
and one data shard. Written independently of the reader so that a reader bug does not hide in both.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from modelkeep.importers._crc32c import crc32c, masked

MAGIC = 0xDB4775248B80FB57
DTYPES = {np.dtype("float32"): 1, np.dtype("float64"): 2, np.dtype("int32"): 3, np.dtype("int64"): 9,
          np.dtype("bool"): 10, np.dtype("float16"): 19, np.dtype("uint8"): 4}


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: int | bytes, *, fixed32: bool = False) -> bytes:
    if fixed32:
        return varint(number << 3 | 5) + struct.pack("<I", value)
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def entry_proto(dtype: int, shape: tuple[int, ...], *, shard: int = 0, offset: int = 0, size: int = 0,
                crc: int = 0, sliced: bool = False) -> bytes:
    dims = b"".join(field(2, field(1, dim)) for dim in shape)
    out = field(1, dtype) + field(2, dims) + field(3, shard) + field(4, offset) + field(5, size)
    if crc:
        out += field(6, crc, fixed32=True)
    if sliced:
        out += field(7, field(1, field(1, 0)))
    return out


def header_proto(*, shards: int = 1, big_endian: bool = False) -> bytes:
    return field(1, shards) + field(2, int(big_endian)) + field(3, field(1, 1))


def block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A block with a restart point at every entry (no shared key prefixes)."""
    body, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(body))
        body += varint(0) + varint(len(key)) + varint(len(value)) + key + value
    restarts = restarts or [0]
    return bytes(body) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def _with_trailer(contents: bytes, compression: int = 0) -> bytes:
    typed = contents + bytes([compression])
    return typed + struct.pack("<I", masked(crc32c(typed)))


def table(entries: list[tuple[bytes, bytes]], *, compression: int = 0, data_block: bytes | None = None) -> bytes:
    """A whole table file: ``entries`` sorted by key; ``data_block`` replaces the encoded data block if given."""
    entries = sorted(entries)
    data = data_block if data_block is not None else block(entries)
    out = bytearray(_with_trailer(data, compression))
    meta_handle = varint(len(out)) + varint(len(block([])))
    out += _with_trailer(block([]))
    last_key = entries[-1][0] if entries else b""
    index = block([(last_key, varint(0) + varint(len(data)))])
    index_handle = varint(len(out)) + varint(len(index))
    out += _with_trailer(index)
    handles = meta_handle + index_handle
    return bytes(out) + handles + bytes(40 - len(handles)) + struct.pack("<Q", MAGIC)


def write_bundle(folder: Path, tensors: dict[str, np.ndarray], *, entries: dict[str, bytes] | None = None,
                 header: bytes | None = None, compression: int = 0) -> Path:
    """Write ``tensors`` as ``folder/variables.index`` + one shard; ``entries`` adds or replaces raw entry protos.

    Returns the bundle prefix ``folder/variables``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shard, records = bytearray(), {}
    for key, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        records[key] = entry_proto(DTYPES[array.dtype], array.shape, offset=len(shard), size=len(raw),
                                   crc=masked(crc32c(raw)))
        shard += raw
    records.update(entries or {})
    items = [(b"", header if header is not None else header_proto())]
    items += [(key.encode(), value) for key, value in records.items()]
    (folder / "variables.index").write_bytes(table(items, compression=compression))
    (folder / "variables.data-00000-of-00001").write_bytes(bytes(shard))
    return folder / "variables"

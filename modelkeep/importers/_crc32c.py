"""CRC-32C (Castagnoli), the checksum of LevelDB-style tables and TensorFlow tensor bundles, without a C extension.

Small inputs go byte by byte through a 256-entry table. Large ones are cut into equal chunks whose CRCs numpy
computes side by side (one table lookup per byte position across all chunks), then joined in order: a CRC
register is linear over GF(2), so the register after chunk ``k`` is ``shift(previous) ^ crc_of_chunk_k`` where
``shift`` pushes ``CHUNK`` zero bytes through the register. About 100 MB/s, instead of 1-2 MB/s in pure Python.
"""
from __future__ import annotations

from functools import lru_cache

_POLY = 0x82F63B78          # CRC-32C, reflected
_MASK_DELTA = 0xA282EAD8    # LevelDB's masking constant
CHUNK = 1024                # bytes per chunk on the vectorised path
_VECTOR_FROM = 64 * 1024    # shorter inputs take the plain loop


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def _register(data: bytes | memoryview, register: int) -> int:
    table = _TABLE
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


@lru_cache(maxsize=1)
def _shift_tables() -> tuple[list[int], list[int], list[int], list[int]]:
    """Four byte tables of the linear map 'push CHUNK zero bytes through the register'."""
    zeros = bytes(CHUNK)
    basis = [_register(zeros, 1 << bit) for bit in range(32)]
    tables = []
    for lane in range(4):
        table = []
        for value in range(256):
            out = 0
            for bit in range(8):
                if value >> bit & 1:
                    out ^= basis[lane * 8 + bit]
            table.append(out)
        tables.append(table)
    return tables[0], tables[1], tables[2], tables[3]


def _register_vectorised(data: memoryview, register: int) -> int:
    import numpy as np

    count = len(data) // CHUNK
    columns = np.ascontiguousarray(np.frombuffer(data[: count * CHUNK], np.uint8).reshape(count, CHUNK).T)
    table = np.array(_TABLE, dtype=np.uint32)
    chunk_crcs = np.zeros(count, dtype=np.uint32)
    for column in columns:  # one byte position of every chunk at a time
        chunk_crcs = table[(chunk_crcs ^ column) & 0xFF] ^ (chunk_crcs >> 8)
    t0, t1, t2, t3 = _shift_tables()
    for crc in chunk_crcs.tolist():
        register = t0[register & 0xFF] ^ t1[register >> 8 & 0xFF] ^ t2[register >> 16 & 0xFF] ^ t3[register >> 24] ^ crc
    return _register(data[count * CHUNK:], register)


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The CRC-32C of ``data``, continuing from ``crc`` (the CRC of what came before)."""
    view = memoryview(data).cast("B")
    register = crc ^ 0xFFFFFFFF
    if len(view) >= _VECTOR_FROM:
        register = _register_vectorised(view, register)
    else:
        register = _register(view, register)
    return register ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    """LevelDB's masked form of a CRC, as stored in tables and tensor bundles."""
    return ((crc >> 15 | crc << 17) + _MASK_DELTA) & 0xFFFFFFFF

"""Hostile data files for the reader-limit tests, written as streams so making them costs little memory.

Not a test module: tests/test_data_limits.py imports it, and so can a measurement script.
"""
from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

MiB = 1 << 20


def gzip_csv_bomb(path: Path, decompressed_bytes: int = 67 * MiB, columns: int = 10_000) -> Path:
    """A ``.csv.gz`` of zeros: about 65 KB that expands to ``decompressed_bytes`` of ``0,0,...,0`` rows."""
    row = b"0," * (columns - 1) + b"0\n"
    block = row * max(1, MiB // len(row))
    with gzip.open(path, "wb", compresslevel=9) as handle:
        written = 0
        while written < decompressed_bytes:
            handle.write(block)
            written += len(block)
    return path


def npy_header(dtype: str, shape: tuple[int, ...], fortran: bool = False) -> bytes:
    import io

    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": fortran, "shape": shape})
    return buffer.getvalue()


def forged_npy(path: Path, shape: tuple[int, ...] = (10**12, 4), dtype: str = "<f4") -> Path:
    """A ``.npy`` whose header declares ``shape`` but which holds only 64 bytes of data."""
    path.write_bytes(npy_header(dtype, shape) + bytes(64))
    return path


def npz_bomb(path: Path, declared_bytes: int, *, y_rows: int = 0, level: int = 1) -> Path:
    """A ``.npz`` whose ``x.npy`` member is ``declared_bytes`` of float64 zeros, deflated (about 1000:1)."""
    rows = declared_bytes // 8
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(npy_header("<f8", (rows,)))
            chunk = bytes(16 * MiB)
            left = rows * 8
            while left > 0:
                member.write(chunk[:min(len(chunk), left)])
                left -= min(len(chunk), left)
        with archive.open("y.npy", "w") as member:
            member.write(npy_header("<i8", (y_rows or rows,)))
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def black_png(path: Path, width: int, height: int) -> Path:
    """A real, valid greyscale PNG of ``width`` x ``height`` black pixels, written row by row (small on disk)."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row's pixels
    idat = bytearray()
    rows_per_block = max(1, (4 * MiB) // len(row))
    block = row * rows_per_block
    done = 0
    while done < height:
        count = min(rows_per_block, height - done)
        idat += compressor.compress(block if count == rows_per_block else row * count)
        done += count
    idat += compressor.flush()
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        handle.write(_png_chunk(b"IDAT", bytes(idat)))
        handle.write(_png_chunk(b"IEND", b""))
    return path


def png_folder(root: Path, width: int, height: int, per_class: int = 3) -> Path:
    """Two class folders of ``per_class`` copies each of one black PNG (six images by default)."""
    root.mkdir(parents=True, exist_ok=True)
    first = black_png(root / "template.png.tmp", width, height)
    data = first.read_bytes()
    first.unlink()
    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / label / f"{i}.png").write_bytes(data)
    return root


def long_field_csv(path: Path, chars: int = 200_000) -> Path:
    path.write_text("a,b,y\n1," + "9" * chars + ",0\n2,3,1\n")
    return path


def text_npy(path: Path) -> Path:
    np.save(path, np.array(["cat", "dog", "cow"]))
    return path

"""Bounded reading of NumPy ``.npy`` files and ``.npz`` archives, never unpickled.

The header (shape, dtype, order) is parsed first, checked against ``ReaderLimits``
and against the bytes actually present, and only then is the array allocated and
filled from the stream. Object dtypes are always refused (reading them needs pickle);
text is accepted only where a caller asks for it (class names as targets).
A ``.npz`` member must be stored or deflate-compressed (what ``numpy.savez`` and
``numpy.savez_compressed`` write) and its declared size is checked against its
compressed size before a byte is decompressed.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from .._overrides import shorten_value
from ..errors import DataError
from .limits import BoundedReader, ReaderLimits, check_elements, count, require_file, resolve_limits

NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
TEXT_KINDS = "US"
HEADER_LIMIT = 10_000  # numpy's own default cap on a header's size
CHUNK = 16 * 1024 * 1024


def _header(stream: BinaryIO, source: object) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(stream, max_header_size=HEADER_LIMIT)
        if version in ((2, 0), (3, 0)):  # 3.0 differs only in the header's text encoding
            return npy_format.read_array_header_2_0(stream, max_header_size=HEADER_LIMIT)
    except (ValueError, SyntaxError, TypeError, EOFError, OSError) as exc:
        raise DataError(f"{source}: not a NumPy .npy array ({' '.join(str(exc).split())[:200]})") from None
    raise DataError(f"{source}: unsupported .npy format version {version}")


def _check_dtype(dtype: np.dtype, source: object, allow_text: bool) -> None:
    if dtype.hasobject:
        raise DataError(f"{source}: holds Python objects (dtype object), which cannot be read without pickle; "
                        "modelkeep never unpickles data. Save numbers (e.g. arr.astype(np.float32)) instead")
    kinds = NUMERIC_KINDS + (TEXT_KINDS if allow_text else "")
    if dtype.kind not in kinds or dtype.subdtype is not None or dtype.names is not None:
        what = "text" if dtype.kind in TEXT_KINDS else f"dtype {shorten_value(str(dtype), 40)}"
        raise DataError(f"{source}: holds {what}, but numeric arrays are needed (bool, integer or float); "
                        "convert it, e.g. arr.astype(np.float32), before saving")


def read_array_from(stream: BinaryIO, available: int, source: object, limits: ReaderLimits, *,
                    allow_text: bool = False) -> np.ndarray:
    """The array a ``.npy`` stream holds; ``available`` is how many bytes the stream may hold in all.

    The declared shape and dtype are checked before anything is allocated: the element count
    against ``limits.max_elements``, the byte count against what the stream can hold.
    """
    shape, fortran_order, dtype = _header(stream, source)
    _check_dtype(dtype, source, allow_text)
    if not shape:
        raise DataError(f"{source}: holds a single number (a 0-d array), not samples; save an array of shape (N, ...)")
    if any(int(dim) < 0 for dim in shape):
        raise DataError(f"{source}: the header declares a negative dimension {shorten_value(tuple(shape), 80)}; it is forged")
    elements = 1
    for dim in shape:
        elements *= int(dim)
    check_elements(elements, source, f"the array of shape {shorten_value(tuple(shape), 80)}", limits)
    nbytes = elements * dtype.itemsize
    header_end = stream.tell()
    if nbytes > available - header_end:
        raise DataError(f"{source}: the header declares shape {shorten_value(tuple(shape), 80)} of {dtype} "
                        f"({count(nbytes)} bytes) but the file holds only {count(max(available - header_end, 0))} "
                        "bytes of data; it is truncated or forged")
    array = np.empty(tuple(reversed(shape)) if fortran_order else shape, dtype=dtype)
    view = memoryview(array.reshape(-1).view(np.uint8)) if nbytes else memoryview(b"")
    filled = 0
    while filled < nbytes:
        data = stream.read(min(CHUNK, nbytes - filled))
        if not data:
            raise DataError(f"{source}: truncated: {count(filled)} of {count(nbytes)} bytes of data present")
        view[filled:filled + len(data)] = data
        filled += len(data)
    return array.T if fortran_order else array


def read_array(path: str | Path, *, limits: ReaderLimits | None = None, allow_text: bool = False) -> np.ndarray:
    """The numeric array of a ``.npy`` file, bounded and never unpickled: what ``predict`` reads as input.

    The dtype is kept (int64 token ids stay integers); text and object arrays are refused.
    """
    limits = resolve_limits(limits)
    path = require_file(path, "a .npy file")
    try:
        with open(path, "rb") as stream:
            return read_array_from(stream, path.stat().st_size, path, limits, allow_text=allow_text)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, limits: ReaderLimits,
            allow_text: bool) -> np.ndarray:
    source = f"{path}[{shorten_value(info.filename, 60)}]"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DataError(f"{source}: compressed with zip method {info.compress_type}; only stored or deflated "
                        "members are read (as numpy.savez and numpy.savez_compressed write them)")
    cap = info.file_size if info.compress_type == zipfile.ZIP_STORED else limits.expansion_cap(info.compress_size)
    if info.file_size > cap:
        raise DataError(f"{source}: declares {count(info.file_size)} bytes from {count(info.compress_size)} "
                        f"compressed, more than the limit of {count(cap)}; refusing it as a possible "
                        "decompression bomb. Raise ReaderLimits(max_decompressed_bytes=..., "
                        "max_compression_ratio=...) if the file is genuine")
    with archive.open(info) as member:
        return read_array_from(BoundedReader(member, cap, source), info.file_size, source, limits,
                               allow_text=allow_text)


def read_npz(path: str | Path, names: dict[str, tuple[str, ...] | str | None], *,
             limits: ReaderLimits | None = None, text: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Chosen arrays of a ``.npz`` archive, bounded and never unpickled.

    ``names`` maps a role (``"x"``, ``"y"``) to the array name to use, or to candidate names
    tried in order; ``text`` lists the roles allowed to hold text (class names).
    """
    limits = resolve_limits(limits)
    path = require_file(path, "a .npz file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename[:-4] if info.filename.endswith(".npy") else info.filename: info
                       for info in archive.infolist() if not info.is_dir()}
            keys = list(members)
            chosen: dict[str, str] = {}
            for role, wanted in names.items():
                candidates = (wanted,) if isinstance(wanted, str) else tuple(wanted or ())
                found = next((k for k in candidates if k in members), None)
                if found is None:
                    raise DataError(f"{path}: expected arrays named 'x' and 'y' (found {shorten_value(keys, 200)}); "
                                    "pass x_key/y_key")
                chosen[role] = found
            return {role: _member(archive, members[key], path, limits, role in text) for role, key in chosen.items()}
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({' '.join(str(exc).split())[:200]})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None

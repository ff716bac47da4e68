"""The byte layout of a modelkeep file, read without torch and without trusting the file.

A modelkeep file is a safetensors file:

    [8 bytes: header length N, little-endian u64][N bytes: JSON header][tensor data]

The JSON header maps tensor names to ``{"dtype", "shape", "data_offsets"}`` and
holds string metadata under ``"__metadata__"``. modelkeep's own metadata lives in
three keys there (see ``docs/format.md``): ``modelkeep.format_version``,
``modelkeep.manifest`` (a JSON document) and ``modelkeep.integrity`` (hashes).

``read_header`` checks every number against the real file size before using it,
so a hostile file can make it raise ``FormatError`` but never allocate memory in
proportion to a size the file merely declares. This module never imports torch.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import FormatError, ModelNotFoundError

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit safetensors itself enforces
MAX_METADATA_VALUE_BYTES = 64 * 1024 * 1024  # any one ``__metadata__`` value, the manifest included
MAX_JSON_DEPTH = 64  # nesting of any JSON document in the file (header, manifest, integrity)
#: Elements of any JSON document in the file, counted before parsing as its ``{``, ``[`` and ``,`` characters
#: (inside strings too: an over-count, never an under-count). Parsing costs up to ~70 bytes per element
#: (an empty object); this keeps the worst case near 70 MB and a second, instead of 6.7 million ``{}`` in
#: a 20 MB manifest costing 1 GB and 20 s. modelkeep's own files use a few elements per tensor.
MAX_JSON_ELEMENTS = 1_000_000
MAX_DIMS = 64
RESERVED_PREFIX = "__"  # tensor names starting with this belong to modelkeep sections (e.g. __optimizer__/)

KEY_VERSION = "modelkeep.format_version"
KEY_MANIFEST = "modelkeep.manifest"
KEY_INTEGRITY = "modelkeep.integrity"

# safetensors dtype name -> bytes per element
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}

_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset into the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    """A validated header: tensor entries in file order, string metadata, where data starts."""

    path: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int
    file_size: int

    @property
    def is_modelkeep(self) -> bool:
        return KEY_MANIFEST in self.metadata

    def format_version(self) -> int:
        raw = self.metadata.get(KEY_VERSION)
        if raw is None:
            raise FormatError(
                f"{self.path} is a safetensors file but not a modelkeep model file (no {KEY_MANIFEST!r} metadata); "
                "read its tensors with modelkeep.read_tensors()"
            )
        if not raw.isdigit():
            raise FormatError(f"{self.path}: {KEY_VERSION} must be a whole number, got {raw[:40]!r}")
        return int(raw)


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and validate the header of ``path``; raise ``FormatError`` on anything wrong."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ModelNotFoundError(f"no such file: {str(path)!r}") from None
    except IsADirectoryError:
        raise FormatError(f"{str(path)!r} is a folder, not a model file") from None
    with handle:
        return _read_header(handle, path)


def _read_header(handle: BinaryIO, path: Path) -> Header:
    try:
        return _read_header_unchecked(handle, path)
    except FormatError:
        # Only now name a foreign format: a valid header length can begin with the same
        # bytes as a pickle (640 is 80 02 00 ...), so magic bytes alone prove nothing.
        handle.seek(0)
        _refuse_foreign(handle.read(8), path)
        raise


def _read_header_unchecked(handle: BinaryIO, path: Path) -> Header:
    file_size = os.fstat(handle.fileno()).st_size
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise FormatError(f"{path} is too short to be a model file ({file_size} bytes); it may be truncated")
    (length,) = struct.unpack("<Q", prefix)
    if length < 2 or length > MAX_HEADER_BYTES:
        raise FormatError(
            f"{path} declares a header of {length} bytes (allowed: 2 to {MAX_HEADER_BYTES}); "
            "it is not a safetensors/modelkeep file or it is corrupt"
        )
    if 8 + length > file_size:
        raise FormatError(
            f"{path} declares a header of {length} bytes but the file has only {file_size - 8} after the prefix; "
            "the file is truncated"
        )
    raw = handle.read(length)
    if len(raw) != length:
        raise FormatError(f"{path} shrank while its header was read; the file is truncated")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{path}: the header is not UTF-8 text; the file is corrupt") from None
    document = loads_bounded(text, f"{path}: the header")
    if not isinstance(document, dict):
        raise FormatError(f"{path}: the header must be a JSON object, got {type(document).__name__}")
    data_start = 8 + length
    data_size = file_size - data_start
    metadata = _parse_metadata(document.pop("__metadata__", None), path)
    tensors = _parse_entries(document, data_size, path)
    return Header(path, tensors, metadata, data_start, file_size)


def _refuse_foreign(prefix: bytes, path: Path) -> None:
    if prefix.startswith(_ZIP_MAGIC):
        raise FormatError(
            f"{path} is a zip archive (the torch.save format, or a .keras file), not a modelkeep file. "
            "modelkeep never unpickles; import its weights with modelkeep's importers instead"
        )
    if prefix[:2] in _PICKLE_MAGIC:
        raise FormatError(
            f"{path} is a Python pickle, not a modelkeep file. Loading pickles can run arbitrary code, "
            "so modelkeep refuses them"
        )


def _parse_metadata(raw: Any, path: Path) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise FormatError(f"{path}: '__metadata__' must map strings to strings")
    return raw


def _parse_entries(document: dict[str, Any], data_size: int, path: Path) -> dict[str, TensorEntry]:
    entries: list[TensorEntry] = []
    for name, info in document.items():
        where = f"{path}: tensor {name[:80]!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where}: each entry needs exactly 'dtype', 'shape' and 'data_offsets'")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise FormatError(f"{where}: unknown dtype {str(dtype)[:20]!r}; known: {', '.join(DTYPE_SIZES)}")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise FormatError(f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets)):
            raise FormatError(f"{where}: data_offsets must be two integers [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise FormatError(
                f"{where}: data_offsets [{begin}, {end}] fall outside the {data_size} bytes of data; "
                "the file is truncated or corrupt"
            )
        expected = math.prod(shape) * DTYPE_SIZES[dtype]
        if end - begin != expected:
            raise FormatError(
                f"{where}: {dtype} {shape} needs {expected} bytes but data_offsets give {end - begin}"
            )
        entries.append(TensorEntry(name, dtype, tuple(shape), begin, end))
    entries.sort(key=lambda e: (e.begin, e.end))
    cursor = 0
    for entry in entries:
        if entry.begin != cursor:
            problem = "overlaps the tensor before it" if entry.begin < cursor else "leaves a gap before it"
            raise FormatError(f"{path}: tensor {entry.name[:80]!r} {problem}; the file is corrupt")
        cursor = entry.end
    if cursor != data_size:
        raise FormatError(
            f"{path}: the tensors cover {cursor} bytes but the file holds {data_size} bytes of data; "
            "the file is truncated or has trailing bytes"
        )
    return {entry.name: entry for entry in entries}


def count_json_elements(text: str | bytes) -> int:
    """An upper bound of the values in a JSON text, in linear time and without parsing it.

    Every value but the first of an array or object follows a ``,`` and every
    container opens with ``{`` or ``[``, so their count plus one bounds the
    values (characters inside strings are counted too, so it only over-counts).
    """
    if isinstance(text, str):
        return text.count("{") + text.count("[") + text.count(",")
    return text.count(b"{") + text.count(b"[") + text.count(b",")


def loads_bounded(text: str | bytes, what: str, *, max_elements: int | None = MAX_JSON_ELEMENTS) -> Any:
    """``json.loads`` for untrusted text: every failure is a ``FormatError``, size and nesting are capped.

    The elements are counted before parsing (``count_json_elements``): a text
    with more than ``max_elements`` (``None``: no limit) is refused, so memory
    and time stay bounded whatever the text holds. ``json`` itself raises
    ``RecursionError`` on very deep nesting and a bare ``ValueError`` on
    integers longer than Python's digit limit; both are caught here. Documents
    nested deeper than ``MAX_JSON_DEPTH`` are refused so that no later
    (recursive) consumer of the document can overflow the stack.
    """
    if max_elements is not None:
        elements = count_json_elements(text)
        if elements > max_elements:
            raise FormatError(
                f"{what} holds about {elements:,} JSON elements; the limit is {max_elements:,} (docs/format.md, "
                "section 2), so it is refused unparsed; the file is corrupt or hostile"
            )
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{what} is not valid JSON ({exc.msg} at position {exc.pos}); the file is corrupt") from None
    except RecursionError:
        raise FormatError(f"{what} is nested too deeply (more than {MAX_JSON_DEPTH} levels); refusing it") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise FormatError(f"{what} is not acceptable JSON: {str(exc)[:200]}") from None
    if json_depth(document) > MAX_JSON_DEPTH:
        raise FormatError(f"{what} is nested too deeply (more than {MAX_JSON_DEPTH} levels); refusing it")
    return document


def json_depth(document: Any) -> int:
    """The nesting depth of a decoded JSON document, computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_json_metadata(header: Header, key: str) -> Any:
    """Decode one JSON metadata value, with the same hostility guards as the header."""
    raw = header.metadata.get(key)
    if raw is None:
        return None
    if len(raw) > MAX_METADATA_VALUE_BYTES:
        raise FormatError(
            f"{header.path}: metadata {key!r} holds {len(raw):,} characters; the limit is {MAX_METADATA_VALUE_BYTES:,}"
        )
    return loads_bounded(raw, f"{header.path}: metadata {key!r}")


def encode_header(entries: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str]) -> bytes:
    """The 8-byte prefix and JSON header for ``(name, dtype, shape, nbytes)`` entries, in data order.

    The header is padded with spaces to a multiple of 8 bytes so tensor data starts aligned.
    """
    document: dict[str, Any] = {"__metadata__": metadata}
    cursor = 0
    for name, dtype, shape, nbytes in entries:
        document[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [cursor, cursor + nbytes]}
        cursor += nbytes
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(len(text) + 8) % 8)
    return struct.pack("<Q", len(text)) + text

"""The limits every data reader obeys, in one place, and the bounded streams that enforce them.

A reader checks what a file *declares* (a NumPy header's shape, a zip member's size,
an image header's pixel count) against ``ReaderLimits`` before it allocates anything,
and reads compressed data through ``BoundedReader``, which stops at a byte cap
instead of expanding a bomb. Errors are ``DataError`` with one line naming the
limit and how to raise it (``limits=ReaderLimits(...)``).

This module never allocates what a file declares and never imports torch.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping

from .._overrides import shorten_value
from ..errors import DataError, ModelNotFoundError

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class ReaderLimits:
    """How much a data reader may expand its input. Pass ``limits=ReaderLimits(...)`` to a reader to change them.

    ``max_decompressed_bytes``: bytes a compressed file (``.csv.gz``, a ``.npz`` member) may expand to.
    ``max_compression_ratio`` and ``compression_allowance``: a compressed input may also expand to no more
    than ``max(compressed size x ratio, allowance)`` bytes; real data rarely compresses beyond 100:1, bombs do.
    ``max_elements``: numbers in one array or table (the NumPy shape's product, CSV rows x columns).
    ``max_image_pixels``: width x height of one image, checked from its header before decoding.
    ``max_csv_field_chars``, ``max_csv_line_chars``, ``max_csv_columns``: the shape of a CSV text.
    """

    max_decompressed_bytes: int = GiB
    max_compression_ratio: int = 100
    compression_allowance: int = 16 * MiB
    max_elements: int = 100_000_000
    max_image_pixels: int = 64_000_000
    max_csv_field_chars: int = 100_000
    max_csv_line_chars: int = 16 * MiB
    max_csv_columns: int = 100_000

    def __post_init__(self) -> None:
        for field_name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(f"ReaderLimits.{field_name} must be a positive integer, got {value!r}")

    def expansion_cap(self, compressed_bytes: int) -> int:
        """The most bytes ``compressed_bytes`` of compressed input may decompress to."""
        by_ratio = max(compressed_bytes * self.max_compression_ratio, self.compression_allowance)
        return min(self.max_decompressed_bytes, by_ratio)


DEFAULT_LIMITS = ReaderLimits()


def resolve_limits(limits: ReaderLimits | Mapping[str, int] | None) -> ReaderLimits:
    """``limits`` as a ``ReaderLimits``: None is the defaults, a mapping (a config's ``limits:``) overrides some."""
    if limits is None:
        return DEFAULT_LIMITS
    if isinstance(limits, Mapping):
        known = {f.name for f in fields(ReaderLimits)}
        unknown = sorted(str(k) for k in limits if k not in known)
        if unknown:
            raise DataError(f"unknown reader limits {shorten_value(unknown, 120)}; known: {', '.join(sorted(known))}")
        return ReaderLimits(**limits)
    if not isinstance(limits, ReaderLimits):
        raise DataError(f"limits must be a modelkeep.data.ReaderLimits or a mapping, got {type(limits).__name__}")
    return limits


def count(value: int) -> str:
    """A number with thousands separators, for messages."""
    return f"{value:,}"


def require_file(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path`` if it is a readable file; a clear error if it is missing or a folder."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder, not {what}; give the file itself "
                        "(a folder is read as images, one sub-folder per class, by load_data)")
    if not path.exists():
        raise ModelNotFoundError(f"data file {str(path)!r} does not exist")
    return path


def check_elements(elements: int, source: object, what: str, limits: ReaderLimits) -> None:
    if elements > limits.max_elements:
        raise DataError(f"{source}: {what} holds {count(elements)} values, more than the limit of "
                        f"{count(limits.max_elements)}; split the data, or raise "
                        "ReaderLimits(max_elements=...) if you have the memory")


class BoundedReader(io.RawIOBase):
    """A binary stream that raises ``DataError`` once more than ``cap`` bytes have come out of ``inner``.

    Wrapping a decompressing stream (``gzip.GzipFile``, a zip member) with it stops a bomb
    after ``cap`` bytes, streaming: nothing is read ahead beyond one buffer.
    """

    def __init__(self, inner: BinaryIO, cap: int, source: object, limit_name: str = "max_decompressed_bytes") -> None:
        super().__init__()
        self.inner, self.cap, self.source, self.limit_name, self.total = inner, cap, source, limit_name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        # ask for at most one byte past the cap, so exceeding it is seen without reading further
        wanted = min(len(view), self.cap - self.total + 1)
        data = self.inner.read(wanted)
        size = len(data)
        view[:size] = data
        self.total += size
        if self.total > self.cap:
            raise DataError(f"{self.source}: decompresses to more than {count(self.cap)} bytes (compressed "
                            f"data may expand at most ReaderLimits.max_compression_ratio times, and to at most "
                            f"ReaderLimits.max_decompressed_bytes); refusing it as a possible decompression bomb. "
                            f"Raise ReaderLimits({self.limit_name}=...) if the file is genuine")
        return size

    def tell(self) -> int:
        return self.total

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            super().close()


def open_binary(path: Path, limits: ReaderLimits) -> io.BufferedReader:
    """``path`` for reading bytes; a ``.gz`` file is decompressed as a stream, capped by ``limits``."""
    if path.suffix.lower() == ".gz":
        compressed = path.stat().st_size
        cap = limits.expansion_cap(compressed)
        with open(path, "rb") as raw:
            # gzip's trailer declares the size (modulo 2**32) of its last member: refuse an honest bomb at once;
            # a lying trailer is caught by the streaming cap below (and by gzip's own length check)
            raw.seek(max(compressed - 4, 0))
            declared = int.from_bytes(raw.read(4), "little")
        if declared > cap:
            raise DataError(f"{path}: declares {count(declared)} bytes decompressed from {count(compressed)}, more "
                            f"than the limit of {count(cap)}; refusing it as a possible decompression bomb. Raise "
                            "ReaderLimits(max_decompressed_bytes=..., max_compression_ratio=...) if it is genuine")
        return io.BufferedReader(BoundedReader(gzip.open(path, "rb"), cap, path), buffer_size=64 * 1024)
    return open(path, "rb")


def bounded_lines(handle: io.TextIOBase, limits: ReaderLimits, source: object) -> Iterator[str]:
    """The lines of a text stream, refusing one longer than ``limits.max_csv_line_chars``."""
    cap = limits.max_csv_line_chars
    number = 0
    while True:
        line = handle.readline(cap + 1)
        if not line:
            return
        number += 1
        if len(line) > cap:
            raise DataError(f"{source}: line {number} is longer than {count(cap)} characters; is this a CSV file? "
                            "Raise ReaderLimits(max_csv_line_chars=...) if it is")
        yield line


def check_pixels(size: tuple[int, int], limits: ReaderLimits, source: object) -> None:
    """Refuse an image whose header declares more than ``limits.max_image_pixels`` pixels."""
    width, height = size
    if width * height > limits.max_image_pixels:
        raise DataError(f"{source}: the image is {width}x{height} = {count(width * height)} pixels, more than the "
                        f"limit of {count(limits.max_image_pixels)}; shrink it first, or raise "
                        "ReaderLimits(max_image_pixels=...)")

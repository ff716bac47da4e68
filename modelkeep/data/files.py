"""A user's data from files: CSV (optionally gzip-compressed), NumPy (``.npy``/``.npz``) and image folders.

CSV and NumPy files are read whole into a ``Dataset``, streaming and within
``ReaderLimits``: a ``.csv.gz`` is decompressed as it is parsed with a cap on the
bytes it may expand to, rows x columns and field lengths are capped, and a NumPy
header's declared shape is checked before the array is allocated. An image
folder becomes an ``ImageFolder`` (see ``images.py``), decoded one image at a time.
Nothing here ever unpickles.
"""
from __future__ import annotations

import contextlib
import csv
import io
import zlib
from array import array
from itertools import chain
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

from .._overrides import shorten_value
from ..errors import DataError
from .dataset import Dataset
from .images import IMAGE_SUFFIXES, ImageFolder, read_image_folder
from .limits import ReaderLimits, bounded_lines, check_elements, count, open_binary, require_file, resolve_limits
from .npy import TEXT_KINDS, read_array, read_npz
from .targets import encode_targets, sequence_targets

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "read_array", "read_csv", "read_image_folder", "read_numpy"]

SNIFF_CHARS = 4096
MAX_MIXED_TARGETS = 65_536  # distinct target texts remembered while every target so far is a number


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    # the csv module's field limit is process-wide: set it for this read only, then put it back
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


class _TargetColumn:
    """The target column, kept compactly: float64 while every value is a number, else an index per distinct text."""

    def __init__(self) -> None:
        self.numbers: array | None = array("d")
        self.texts: dict[str, int] | None = {}  # distinct texts seen, while there are few enough
        self.indices = array("q")

    def add(self, cell: str) -> None:
        if self.numbers is not None:
            try:
                value = float(cell)
            except ValueError:
                self._to_text()
            else:
                self.numbers.append(value)
                if self.texts is not None:
                    self.indices.append(self.texts.setdefault(cell, len(self.texts)))
                    if len(self.texts) > MAX_MIXED_TARGETS:  # many distinct numbers: a regression target
                        self.texts, self.indices = None, array("q")
                return
        assert self.texts is not None
        self.indices.append(self.texts.setdefault(cell, len(self.texts)))

    def _to_text(self) -> None:
        if self.texts is None:
            raise DataError(f"the target column mixes numbers and text over more than {count(MAX_MIXED_TARGETS)} "
                            "distinct values; use one kind of value for targets")
        self.numbers = None

    def distinct_and_inverse(self) -> tuple[np.ndarray, np.ndarray]:
        if self.numbers is not None:
            distinct, inverse = np.unique(np.frombuffer(self.numbers, dtype=np.float64), return_inverse=True)
            return distinct, inverse.reshape(-1)
        assert self.texts is not None
        return np.asarray(list(self.texts), dtype=object), np.frombuffer(self.indices, dtype=np.int64)


def _rows(lines: Iterator[str], delimiter: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                yield reader.line_num, row
    except csv.Error as exc:
        text = str(exc)
        if "field larger than field limit" in text:
            raise DataError(f"{path}: line {reader.line_num} has a field longer than "
                            f"{count(csv.field_size_limit())} characters; is this a CSV file? Raise "
                            "ReaderLimits(max_csv_field_chars=...) if it is") from None
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({shorten_value(text, 120)})") from None


def _target_index(target: str | int, columns: list[str], path: Path) -> int:
    width = len(columns)
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if target not in columns:
            raise DataError(f"{path}: no column named {shorten_value(target)}; columns are {shorten_value(columns, 200)}")
        return columns.index(target)
    return int(target) % width


def _parse(handle: io.TextIOBase, path: Path, *, target, header, delimiter, limits: ReaderLimits):
    lines = bounded_lines(handle, limits, path)
    head: list[str] = []
    size = 0
    for line in lines:
        head.append(line)
        size += len(line)
        if size >= SNIFF_CHARS:
            break
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff("".join(head)[:SNIFF_CHARS], delimiters=",;\t ").delimiter
        except csv.Error:
            delimiter = ","
    rows = _rows(chain(head, lines), delimiter, path)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: the CSV file is empty")
    _, first_row = first
    if len(first_row) > limits.max_csv_columns:
        raise DataError(f"{path}: {count(len(first_row))} columns, more than the limit of "
                        f"{count(limits.max_csv_columns)}; raise ReaderLimits(max_csv_columns=...) if that is right")
    if header is None:
        header = not all(_is_number(c) for c in first_row)
    columns = [c.strip() for c in first_row] if header else [str(i) for i in range(len(first_row))]
    width = len(columns)
    target_index = _target_index(target, columns, path)
    feature_indices = [i for i in range(width) if i != target_index]
    features, targets, samples = array("f"), _TargetColumn(), 0
    for line, row in (rows if header else chain([first], rows)):
        if len(row) != width:
            raise DataError(f"{path}: line {line} has {len(row)} fields but the file has {width} columns")
        samples += 1
        check_elements(samples * width, path, f"the table ({count(samples)} rows so far)", limits)
        try:
            features.extend([float(row[i]) for i in feature_indices])
        except ValueError as exc:
            raise DataError(f"{path}: feature columns must hold numbers (line {line}: {shorten_value(str(exc), 100)}); "
                            "encode categories as numbers first") from None
        targets.add(row[target_index].strip())
    if not samples:
        raise DataError(f"{path}: the CSV file has a header but no rows")
    x = np.frombuffer(features, dtype=np.float32).reshape(samples, len(feature_indices))
    return x, targets


def read_csv(
    path: str | Path,
    *,
    target: str | int = -1,
    task: Literal["auto", "classification", "regression"] = "auto",
    header: bool | None = None,
    delimiter: str | None = None,
    labels: Sequence[str] | None = None,
    name: str | None = None,
    limits: ReaderLimits | None = None,
) -> Dataset:
    """A CSV file (or ``.csv.gz``) with one sample per row; ``target`` names (or indexes) the target column.

    ``header=None`` detects a header row (a first row that is not all numbers).
    Class targets may be text ("cat", "dog"); features must be numbers. ``labels``, a model's
    class names, match target values by name. Reading stays within ``limits``.
    """
    limits = resolve_limits(limits)
    path = require_file(path, "a CSV file")
    try:
        with _field_limit(limits.max_csv_field_chars), open_binary(path, limits) as raw, \
                io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
            x, column = _parse(handle, path, target=target, header=header, delimiter=delimiter, limits=limits)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a truncated .gz an EOFError
        raise DataError(f"cannot read {path}: {shorten_value(' '.join(str(exc).split()), 160)}") from None
    distinct, inverse = column.distinct_and_inverse()
    y, found_labels, task_found = encode_targets(distinct, inverse, task, path, labels=labels)
    return Dataset(name or path.stem.split(".")[0], x, y, found_labels, task_found)


def _per_position(x: np.ndarray, y: np.ndarray, task: str) -> bool:
    """Targets of shape (N, T), T > 1, are classes per position when the task says classification, or with
    ``task="auto"`` when they are integers shaped like integer inputs (token ids and next-token ids)."""
    if y.ndim < 2 or y.shape[1] == 1 or y.dtype.kind in TEXT_KINDS:
        return False
    if task == "classification":
        return True
    return task == "auto" and y.ndim == 2 and y.dtype.kind in "iu" and x.dtype.kind in "iu" and x.shape == y.shape


def read_numpy(
    path: str | Path,
    *,
    x_key: str | None = None,
    y_key: str | None = None,
    targets: str | Path | None = None,
    task: Literal["auto", "classification", "regression"] = "auto",
    labels: Sequence[str] | None = None,
    name: str | None = None,
    limits: ReaderLimits | None = None,
) -> Dataset:
    """Features and targets from NumPy files, bounded and never unpickled.

    ``.npz``: arrays named ``x``/``y`` (or ``X``, ``features``, ``data`` and ``target(s)``,
    ``labels``), or ``x_key``/``y_key``. ``.npy``: the features, with ``targets`` the
    path of a second ``.npy``; without it, the last column of a 2-D array is the target.
    ``labels`` name the classes: matched by name to text targets, else one for one in sorted order.
    Integer targets of shape ``(N, T)`` are a class per position (token ids; with ``task="auto"`` when
    the inputs are integers of the same shape): kept as class indices, bounded by ``labels`` when given.
    """
    limits = resolve_limits(limits)
    path = Path(path)
    if path.suffix.lower() == ".npz":
        arrays = read_npz(path, {"x": x_key or ("x", "X", "features", "data", "inputs"),
                                 "y": y_key or ("y", "Y", "targets", "target", "labels")}, limits=limits, text=("y",))
        x, y_raw = arrays["x"], arrays["y"]
    else:
        x = read_array(path, limits=limits)
        if targets is not None:
            y_raw = read_array(targets, limits=limits, allow_text=True)
        elif x.ndim == 2 and x.shape[1] >= 2:
            x, y_raw = x[:, :-1], x[:, -1]
        else:
            raise DataError(f"{path}: a .npy file needs 'targets' (a second .npy) unless it is a 2-D table")
    if len(x) != len(y_raw):
        raise DataError(f"{path}: {len(x)} samples but {len(y_raw)} targets")
    if _per_position(x, y_raw, task):  # (N, T) class indices: a language model's next token at every position
        y, found = sequence_targets(y_raw, path, labels=labels)
        return Dataset(name or path.stem, np.ascontiguousarray(x, dtype=np.float32), y, found, "classification")
    if task == "classification" and y_raw.ndim > 1 and any(d != 1 for d in y_raw.shape[2:]):
        raise DataError(f"{path}: class targets must be one per sample (N,) or one per position (N, T), got shape "
                        f"{shorten_value(list(y_raw.shape), 80)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if y_raw.ndim > 1 and task != "classification":
        if y_raw.dtype.kind not in "biuf":
            raise DataError(f"{path}: regression targets must be numbers")
        return Dataset(name or path.stem, x, y_raw.astype(np.float32), None, "regression")
    if y_raw.dtype.kind == "S":
        y_raw = np.char.decode(y_raw, "latin-1")
    distinct, inverse = np.unique(y_raw.ravel(), return_inverse=True)
    y, found_labels, task_found = encode_targets(distinct, inverse.reshape(-1), task, path, labels=labels, rename=True)
    return Dataset(name or path.stem, x, y, found_labels, task_found)

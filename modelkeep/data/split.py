"""Seeded train/validation/test splits, stratified by class for classification."""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..errors import DataError
from .dataset import Dataset


@dataclass(frozen=True)
class Splits:
    train: Dataset
    validation: Dataset
    test: Dataset


def split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """The (train, validation, test) sizes of ``n`` samples split as ``fractions``, computed exactly.

    The rule of scikit-learn's ``train_test_split`` applied twice (the test part first, then the
    validation part of the rest), each part rounded up: ``test = ceil(n * test)``, then
    ``validation = ceil(rest * validation / (train + validation))``. Fractions are read as the
    decimals they print as (0.1 is 1/10), so 150 samples split 80/10/10 give 120/15/15, where the
    same rule in floating point gives 119/16/15 (``135 * (0.1 / 0.9)`` is 15.000000000000002).
    """
    train, validation, test = (Fraction(repr(float(f))) for f in fractions)
    total = train + validation + test
    n_test = math.ceil(n * test / total)
    rest = n - n_test
    n_validation = math.ceil(rest * validation / (train + validation)) if train + validation else rest
    return rest - n_validation, n_validation, n_test


def split_dataset(
    dataset: Dataset,
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool | None = None,
) -> Splits:
    """Split into train/validation/test (default 80/10/10; sizes from ``split_sizes``).

    ``stratify`` defaults to True for classification: every split keeps the class
    proportions of the whole. The same seed always gives the same split.
    """
    from sklearn.model_selection import train_test_split

    if (len(fractions) != 3 or any(not math.isfinite(f) or f < 0 for f in fractions)
            or abs(sum(fractions) - 1.0) > 1e-6):
        raise DataError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    if stratify is None:  # one class per sample; per-position classes (N, T) are not stratified
        stratify = dataset.task == "classification" and np.ndim(dataset.y) == 1
    n_train, n_validation, n_test = split_sizes(len(dataset), fractions)
    indices = np.arange(len(dataset))
    labels = dataset.y if stratify else None
    try:
        # whole numbers, so scikit-learn does no floating-point rounding of its own
        rest, test = train_test_split(indices, test_size=n_test, train_size=n_train + n_validation,
                                      random_state=seed, stratify=labels)
        train, validation = train_test_split(rest, test_size=n_validation, train_size=n_train, random_state=seed,
                                             stratify=labels[rest] if stratify else None)
    except ValueError as exc:
        raise DataError(f"cannot split {dataset.name!r} ({len(dataset)} samples) as {fractions}: {exc}") from None
    return Splits(
        dataset.subset(np.sort(train), f"{dataset.name}/train"),
        dataset.subset(np.sort(validation), f"{dataset.name}/validation"),
        dataset.subset(np.sort(test), f"{dataset.name}/test"),
    )


@dataclass(frozen=True)
class Fold:
    """One fold of k-fold cross-validation: its number (0-based), training part and held-out validation part."""

    index: int
    train: Dataset
    validation: Dataset
    validation_indices: np.ndarray


def kfold_splits(dataset: Dataset, k: int = 5, *, seed: int = 0, stratify: bool | None = None) -> list[Fold]:
    """``k`` folds; every sample is in exactly one fold's validation part. Stratified for classification."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if not isinstance(k, int) or k < 2:
        raise DataError(f"k-fold cross-validation needs at least 2 folds, got {k!r}")
    if k > len(dataset):
        raise DataError(f"cannot make {k} folds of {dataset.name!r}: it has only {len(dataset)} samples")
    if stratify is None:
        stratify = dataset.task == "classification" and np.ndim(dataset.y) == 1
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=k, shuffle=True, random_state=seed)
    indices = np.arange(len(dataset))
    try:
        parts = list(splitter.split(indices, dataset.y if stratify else None))
    except ValueError as exc:
        raise DataError(f"cannot make {k} folds of {dataset.name!r}: {exc}") from None
    return [
        Fold(i, dataset.subset(np.sort(train), f"{dataset.name}/fold{i}/train"),
             dataset.subset(np.sort(held_out), f"{dataset.name}/fold{i}/validation"), np.sort(held_out))
        for i, (train, held_out) in enumerate(parts)
    ]

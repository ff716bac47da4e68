"""Seeded train/validation/test splits, stratified by class for classification."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .dataset import Dataset


@dataclass(frozen=True)
class Splits:
    train: Dataset
    validation: Dataset
    test: Dataset


def split_dataset(
    dataset: Dataset,
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool | None = None,
) -> Splits:
    """Split into train/validation/test (default 80/10/10).

    ``stratify`` defaults to True for classification: every split keeps the class
    proportions of the whole. The same seed always gives the same split.
    """
    from sklearn.model_selection import train_test_split

    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    if stratify is None:
        stratify = dataset.task == "classification"
    train_fraction, val_fraction, test_fraction = fractions
    indices = np.arange(len(dataset))
    labels = dataset.y if stratify else None
    try:
        rest, test = train_test_split(indices, test_size=test_fraction, random_state=seed, stratify=labels)
        relative = val_fraction / (train_fraction + val_fraction)
        train, validation = train_test_split(
            rest, test_size=relative, random_state=seed, stratify=labels[rest] if stratify else None
        )
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
        stratify = dataset.task == "classification"
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

"""Data: the real digits set, stratified seeded splits, preprocessing fitted on training data only."""
from __future__ import annotations

import numpy as np
import pytest

from modelkeep.data import Standardize, load_dataset, split_dataset
from modelkeep.errors import DataError


def test_digits_split_is_80_10_10_stratified_and_seeded():
    dataset = load_dataset("digits")
    splits = split_dataset(dataset, seed=0)
    sizes = [len(splits.train), len(splits.validation), len(splits.test)]
    assert sum(sizes) == len(dataset) == 1797
    assert sizes == pytest.approx([0.8 * 1797, 0.1 * 1797, 0.1 * 1797], abs=2)
    overall = np.bincount(dataset.y) / len(dataset)
    for part in (splits.train, splits.validation, splits.test):
        assert np.allclose(np.bincount(part.y, minlength=10) / len(part), overall, atol=0.02)
    again = split_dataset(dataset, seed=0)
    assert np.array_equal(again.test.x, splits.test.x)
    other = split_dataset(dataset, seed=1)
    assert not np.array_equal(other.test.x, splits.test.x)


def test_standardize_uses_training_statistics_only():
    splits = split_dataset(load_dataset("digits"), seed=0)
    pre = Standardize().fit(splits.train.x)
    assert np.allclose(pre.mean, splits.train.x.mean(axis=0))
    assert not np.allclose(pre.mean, splits.test.x.mean(axis=0))
    restored = Standardize.from_dict(pre.to_dict())
    assert np.array_equal(restored.transform(splits.test.x), pre.transform(splits.test.x))


def test_unknown_dataset_suggests_names():
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_dataset("digit")

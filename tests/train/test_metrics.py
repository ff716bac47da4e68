"""Metrics over whole splits equal scikit-learn's on the same predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from modelkeep.data import Standardize, load_dataset, split_dataset
from modelkeep.nn import build
from modelkeep.train import MetricAccumulator, compute_metrics, evaluate, fit


@pytest.fixture(scope="module")
def wine_model():
    splits = split_dataset(load_dataset("wine"), seed=0)
    spec = {"layers": [{"kind": "Input", "shape": [13]}, {"kind": "Dense", "units": 3}]}
    result = fit(build(spec, seed=0), splits.train, splits.validation, splits.test, epochs=2, batch_size=16,
                 learning_rate=0.003, preprocessing=Standardize(), metrics=["accuracy", "precision", "recall", "f1"],
                 progress=False)
    return splits, result


def _sk_classification(y, pred):
    return {
        "accuracy": sk.accuracy_score(y, pred),
        "precision": sk.precision_score(y, pred, average="macro", zero_division=0),
        "recall": sk.recall_score(y, pred, average="macro", zero_division=0),
        "f1": sk.f1_score(y, pred, average="macro", zero_division=0),
    }


def test_test_metrics_equal_scikit_learns(wine_model):
    splits, result = wine_model
    x = torch.from_numpy(result.preprocessing.transform(splits.test.x))
    with torch.no_grad():
        pred = result.model(x).argmax(1).numpy()
    expected = _sk_classification(splits.test.y, pred)
    for name, value in expected.items():
        assert result.test_metrics[name] == pytest.approx(value, abs=1e-12), name
    report = result.test_report
    assert report["confusion_matrix"] == sk.confusion_matrix(splits.test.y, pred, labels=[0, 1, 2]).tolist()
    assert np.allclose(report["f1_per_class"], sk.f1_score(splits.test.y, pred, average=None, labels=[0, 1, 2],
                                                           zero_division=0))


def test_metrics_are_over_the_whole_split_not_per_batch(wine_model):
    splits, result = wine_model
    small = evaluate(result.model, splits.test, preprocessing=result.preprocessing, batch_size=3,
                     metrics=["accuracy", "f1"])
    large = evaluate(result.model, splits.test, preprocessing=result.preprocessing, batch_size=1000,
                     metrics=["accuracy", "f1"])
    assert small["accuracy"] == large["accuracy"] and small["f1"] == pytest.approx(large["f1"], abs=1e-15)
    assert small["loss"] == pytest.approx(large["loss"], rel=1e-6)


def test_classification_metrics_with_missing_classes_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    logits = rng.normal(size=(200, 5))
    logits[:, 3] -= 100  # class 3 is never predicted
    pred = logits.argmax(1)
    report = compute_metrics(y, logits, "classification", num_classes=5)
    for name, value in _sk_classification(y, pred).items():
        assert report[name] == pytest.approx(value, abs=1e-12), name


def test_binary_single_output_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    logits = rng.normal(size=(100, 1))
    pred = (logits[:, 0] > 0).astype(int)
    report = compute_metrics(y, logits, "classification", num_classes=2)
    for name, value in _sk_classification(y, pred).items():  # the macro averages, under their own names
        assert report[name if name == "accuracy" else f"{name}_macro"] == pytest.approx(value, abs=1e-12), name


def test_regression_metrics_match_scikit_learn_over_batches():
    data = load_dataset("diabetes")
    rng = np.random.default_rng(2)
    predictions = data.y + rng.normal(scale=40, size=data.y.shape).astype(np.float32)
    accumulator = MetricAccumulator("regression")
    for start in range(0, len(data.y), 37):  # uneven batches
        accumulator.update(torch.from_numpy(predictions[start:start + 37]), torch.from_numpy(data.y[start:start + 37]))
    report = accumulator.report()
    y, predictions = data.y.astype(np.float64), predictions.astype(np.float64)  # we sum in float64
    assert report["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y, predictions)), rel=1e-9)
    assert report["mae"] == pytest.approx(sk.mean_absolute_error(y, predictions), rel=1e-9)
    assert report["r2"] == pytest.approx(sk.r2_score(y, predictions), rel=1e-9)


def test_multi_output_r2_is_the_uniform_average():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(50, 3))
    out = y + rng.normal(scale=0.5, size=(50, 3))
    report = compute_metrics(y, out, "regression")
    assert report["r2"] == pytest.approx(sk.r2_score(y, out), rel=1e-9)
    assert report["mse"] == pytest.approx(sk.mean_squared_error(y, out), rel=1e-9)


def test_binary_precision_recall_f1_are_the_positive_class_as_in_scikit_learn():
    """Issue 10 #6: a two-class f1 was the macro average under the name f1; now it is scikit-learn's default
    (the positive class), and the macro averages carry their own names."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    logit = rng.normal(size=300) + (y - 0.3)
    report = compute_metrics(y, logit[:, None], "classification", num_classes=2)
    pred = (logit > 0).astype(int)
    for name, score in (("precision", sk.precision_score), ("recall", sk.recall_score), ("f1", sk.f1_score)):
        assert report[name] == pytest.approx(score(y, pred, zero_division=0), abs=1e-12), name
        assert report[f"{name}_macro"] == pytest.approx(score(y, pred, average="macro", zero_division=0),
                                                        abs=1e-12), name
    assert report["f1"] != pytest.approx(report["f1_macro"])


def test_macro_names_are_metric_names_and_equal_f1_for_several_classes(wine_model):
    splits, result = wine_model
    scores = evaluate(result.model, splits.test, preprocessing=result.preprocessing,
                      metrics=["f1", "f1_macro", "precision_macro"])
    assert scores["f1"] == scores["f1_macro"] and "precision_macro" in scores


def test_many_classes_keep_per_class_counts_not_a_k_by_k_matrix():
    """A language model's vocabulary (GPT-2: 50,257 classes) would need K² counters (20 GB); per-class counts give
    the same metrics. Checked against the matrix path at a small size by lowering the limit."""
    import modelkeep.train.metrics as metrics_module

    rng = np.random.default_rng(3)
    y = rng.integers(0, 40, 500)
    logits = rng.normal(size=(500, 40)) + np.eye(40)[y] * 1.5
    with_matrix = compute_metrics(y, logits, "classification", num_classes=40)
    limit = metrics_module.MAX_CONFUSION_CLASSES
    metrics_module.MAX_CONFUSION_CLASSES = 10
    try:
        accumulator = MetricAccumulator("classification", num_classes=40)
        accumulator.update(torch.as_tensor(logits), torch.as_tensor(y))
        assert accumulator.confusion.shape == (3, 40)
        counted = accumulator.report()
    finally:
        metrics_module.MAX_CONFUSION_CLASSES = limit
    assert "confusion_matrix" not in counted
    for name in ("accuracy", "precision", "recall", "f1", "f1_macro"):
        assert counted[name] == pytest.approx(with_matrix[name], abs=1e-12), name
    assert counted["f1_per_class"] == pytest.approx(with_matrix["f1_per_class"])

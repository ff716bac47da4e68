"""fit: learns on real data, reproducible, stops on NaN."""
from __future__ import annotations

import pytest
import torch

from modelkeep.errors import ConfigError, TrainingError
from modelkeep.nn import build
from modelkeep.quickstart import DIGITS_CNN
from modelkeep.train import evaluate, fit

MLP = {"layers": [{"kind": "Input", "shape": [1, 8, 8]}, {"kind": "Flatten"},
                  {"kind": "Dense", "units": 32, "activation": "relu"}, {"kind": "Dense", "units": 10}]}


@pytest.mark.parametrize("loss,optimizer,lr", [("categorical_crossentropy", "adam", 1e-3),
                                                ("categorical_crossentropy", "sgd", 0.05),
                                                ("mse", "adam", 1e-3)])
def test_each_loss_and_optimizer_lowers_the_loss(digits_splits, loss, optimizer, lr):
    model = build(MLP, seed=0)
    result = fit(model, digits_splits.train, digits_splits.validation, loss=loss, optimizer=optimizer,
                 learning_rate=lr, epochs=3, batch_size=32, progress=False)
    losses = result.history["loss"]
    assert losses[-1] < losses[0]
    assert set(result.history.keys) >= {"epoch", "loss", "val_loss", "val_accuracy", "lr", "time"}


def test_test_split_reported_once_and_training_learns(trained):
    assert trained.test_metrics["accuracy"] > 0.8
    assert trained.history["val_accuracy"][-1] > 0.8


def test_same_seed_gives_bit_identical_weights(digits_splits):
    runs = []
    for _ in range(2):
        model = build(DIGITS_CNN, seed=3)
        fit(model, digits_splits.train, epochs=1, batch_size=64, seed=3, progress=False)
        runs.append(model.state_dict())
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


def test_nan_loss_stops_with_a_clear_message(digits_splits):
    model = build(MLP, seed=0)
    with pytest.raises(TrainingError, match="lower the learning rate"):
        fit(model, digits_splits.train, optimizer="sgd", learning_rate=1e12, loss="mse", epochs=3, progress=False)


def test_unknown_loss_is_a_config_error(digits_splits):
    with pytest.raises(ConfigError, match="did you mean 'mse'"):
        fit(build(MLP), digits_splits.train, loss="msee", progress=False)


def test_evaluate_matches_fit_test_metrics(trained, digits_splits):
    metrics = evaluate(trained.model, digits_splits.test, preprocessing=trained.preprocessing)
    assert metrics["accuracy"] == trained.test_metrics["accuracy"]

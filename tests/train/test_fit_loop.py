"""The training loop: early stopping, one test evaluation, NaN detection, seeding, descent modes, hooks, position."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from modelkeep.data import Standardize, load_dataset, split_dataset
from modelkeep.errors import ConfigError, TrainingError
from modelkeep.nn import build
from modelkeep.train import EarlyStopping, epoch_permutation, evaluate, fit
from modelkeep.train.history import write_history

fit_module = importlib.import_module("modelkeep.train.fit")  # the module, not the function `fit`
loop_module = importlib.import_module("modelkeep.train.loop")
IRIS_MLP = {"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 16, "activation": "relu"},
                       {"kind": "Dense", "units": 3}]}


@pytest.fixture(scope="module")
def iris():
    return split_dataset(load_dataset("iris"), seed=0)


class Recorder:
    def __init__(self):
        self.calls = []
        self.weights_at_best = None

    def on_train_begin(self, state, logs):
        self.calls.append(("train_begin", state.epoch, state.batch, state.step))

    def on_epoch_begin(self, state, logs):
        self.calls.append(("epoch_begin", state.epoch, state.batch, state.step))

    def on_step_end(self, state, logs):
        assert isinstance(logs["loss"], torch.Tensor)
        self.calls.append(("step_end", state.epoch, state.batch, state.step))

    def on_epoch_end(self, state, logs):
        self.calls.append(("epoch_end", state.epoch, state.batch, state.step))

    def on_train_end(self, state, logs):
        self.calls.append(("train_end", state.epoch, state.batch, state.step))


def test_hooks_see_an_explicit_position(iris):
    recorder = Recorder()
    fit(build(IRIS_MLP, seed=0), iris.train, epochs=2, batch_size=40, callbacks=[recorder], progress=False)
    assert len(iris.train) == 120  # 120 samples / 40 = 3 batches per epoch (issue 10 item 5: was 119)
    assert recorder.calls == [
        ("train_begin", 0, 0, 0),
        ("epoch_begin", 0, 0, 0), ("step_end", 0, 1, 1), ("step_end", 0, 2, 2), ("step_end", 0, 3, 3),
        ("epoch_end", 1, 0, 3),
        ("epoch_begin", 1, 0, 3), ("step_end", 1, 1, 4), ("step_end", 1, 2, 5), ("step_end", 1, 3, 6),
        ("epoch_end", 2, 0, 6),
        ("train_end", 2, 0, 6),
    ]


def test_data_order_is_a_pure_function_of_seed_and_epoch():
    assert torch.equal(epoch_permutation(3, 5, 100), epoch_permutation(3, 5, 100))
    assert not torch.equal(epoch_permutation(3, 5, 100), epoch_permutation(3, 6, 100))
    assert not torch.equal(epoch_permutation(3, 5, 100), epoch_permutation(4, 5, 100))


def test_early_stopping_restores_the_best_weights(iris):
    snapshots = {}

    class Snapshot:
        def on_epoch_end(self, state, logs):
            snapshots[state.epoch] = ({k: v.clone() for k, v in state.model.state_dict().items()}, logs["val_loss"])

    stopper = EarlyStopping("val_loss", patience=2)
    # A learning rate this high makes the validation loss bounce, so the best epoch is not the last.
    result = fit(build(IRIS_MLP, seed=0), iris.train, iris.validation, optimizer="sgd", learning_rate=2.0,
                 epochs=30, batch_size=8, callbacks=[Snapshot(), stopper], detect_nonfinite=False,
                 preprocessing=Standardize(), progress=False)
    losses = result.history["val_loss"]
    finite = [v if math.isfinite(v) else math.inf for v in losses]
    best_epoch = int(np.argmin(finite)) + 1
    assert stopper.best_epoch == best_epoch
    assert len(losses) < 30 and len(losses) == best_epoch + 3  # patience 2: three epochs without improvement
    best_weights, _ = snapshots[best_epoch]
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, best_weights[name]), name
    restored = evaluate(result.model, iris.validation, preprocessing=result.preprocessing)
    assert restored["loss"] == pytest.approx(finite[best_epoch - 1], rel=1e-6)
    assert stopper.state_dict()["best_epoch"] == best_epoch


def test_early_stopping_state_round_trips():
    a = EarlyStopping("val_accuracy", patience=3)
    a.best, a.waited, a.best_epoch, a.best_step = 0.9, 2, 4, 40
    b = EarlyStopping("val_accuracy", patience=3)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() and not b.lower_is_better


def test_test_split_is_evaluated_exactly_once_and_after_training(iris, monkeypatch):
    seen = []
    original = fit_module.evaluate_split

    def counting(model, split, *args, **kwargs):
        seen.append(split.name)
        return original(model, split, *args, **kwargs)

    monkeypatch.setattr(fit_module, "evaluate_split", counting)  # the test split
    monkeypatch.setattr(loop_module, "evaluate_split", counting)  # validations
    built = []
    original_split = fit_module.Split

    def tracking_split(dataset, *args, **kwargs):
        built.append(dataset.name)
        return original_split(dataset, *args, **kwargs)

    monkeypatch.setattr(fit_module, "Split", tracking_split)
    result = fit(build(IRIS_MLP, seed=0), iris.train, iris.validation, iris.test, epochs=3, batch_size=16,
                 early_stopping={"patience": 1}, progress=False)
    assert seen.count("iris/test") == 1 and seen[-1] == "iris/test"
    assert seen.count("iris/validation") == len(result.history)
    assert built[-1] == "iris/test" and built.count("iris/test") == 1  # not even converted before training ended
    assert set(result.test_metrics) == {"loss", "accuracy", "f1"}


def test_nan_loss_stops_with_a_clear_message(iris):
    with pytest.raises(TrainingError, match=r"became (nan|inf).*lower the learning rate"):
        fit(build(IRIS_MLP, seed=0), iris.train, optimizer="sgd", learning_rate=1e12, loss="mse", epochs=3,
            progress=False)


def test_nan_check_can_be_turned_off(iris):
    result = fit(build(IRIS_MLP, seed=0), iris.train, optimizer="sgd", learning_rate=1e12, loss="mse", epochs=1,
                 detect_nonfinite=False, progress=False)
    assert not math.isfinite(result.history["loss"][0])


def test_same_seed_gives_bit_identical_weights_with_dropout(iris):
    spec = {"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 32, "activation": "relu"},
                       {"kind": "Dropout", "rate": 0.5}, {"kind": "Dense", "units": 3}]}
    runs = []
    for _ in range(2):
        model = build(spec, seed=1)
        fit(model, iris.train, epochs=2, batch_size=8, seed=5, deterministic=True, progress=False)
        runs.append(model.state_dict())
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name
    other = build(spec, seed=1)
    fit(other, iris.train, epochs=2, batch_size=8, seed=6, progress=False)
    first = next(iter(runs[0]))
    assert not torch.equal(other.state_dict()[first], runs[0][first])


@pytest.mark.parametrize("batch_size", ["full", 1, 16])
def test_full_batch_per_sample_and_mini_batch_descent(iris, batch_size):
    recorder = Recorder()
    result = fit(build(IRIS_MLP, seed=0), iris.train, epochs=3, batch_size=batch_size, learning_rate=0.01,
                 preprocessing=Standardize(), callbacks=[recorder], progress=False)
    n = len(iris.train)
    steps = {"full": 1, 1: n, 16: math.ceil(n / 16)}[batch_size]
    assert recorder.calls[-1] == ("train_end", 3, 0, 3 * steps)
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_gradient_accumulation_equals_the_larger_batch(iris):
    """Two micro-batches of 20 accumulated give the gradient of one batch of 40 (same samples, same order)."""
    def run(batch_size, accumulate):
        model = build(IRIS_MLP, seed=0)
        fit(model, iris.train, optimizer="sgd", learning_rate=0.1, epochs=2, batch_size=batch_size,
            accumulate=accumulate, progress=False, seed=0)
        return model.state_dict()

    big, accumulated = run(40, 1), run(20, 2)
    for name in big:
        assert torch.allclose(big[name], accumulated[name], atol=1e-5), name


def test_gradient_clipping_bounds_the_update(iris):
    model = build(IRIS_MLP, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, iris.train, optimizer="sgd", learning_rate=1.0, epochs=1, batch_size="full", clip_norm=0.01,
        progress=False)
    change = torch.sqrt(sum(((model.state_dict()[k] - before[k]) ** 2).sum() for k in before))
    assert float(change) <= 0.01 + 1e-6


def test_validation_every_n_steps(iris):
    result = fit(build(IRIS_MLP, seed=0), iris.train, iris.validation, epochs=2, batch_size=16, validate_every=3,
                 progress=False)
    assert result.step_history["step"] == [3, 6, 9, 12, 15]
    assert "val_accuracy" in result.history.keys


def test_bad_arguments_are_config_errors(iris):
    with pytest.raises(ConfigError, match="validation data"):
        fit(build(IRIS_MLP), iris.train, early_stopping=True, progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        fit(build(IRIS_MLP), iris.train, batch_size=-1, progress=False)
    with pytest.raises(ConfigError, match="CUDA"):
        fit(build(IRIS_MLP), iris.train, precision="bf16", device="cpu", progress=False)
    with pytest.raises(ConfigError, match="metric"):
        fit(build(IRIS_MLP), iris.train, metrics=["r2"], progress=False)


def test_history_is_written_as_csv_json_and_curves(iris, tmp_path):
    result = fit(build(IRIS_MLP, seed=0), iris.train, iris.validation, epochs=3, batch_size=16, progress=False)
    files = write_history(result.history, tmp_path)
    assert [p.name for p in files] == ["history.csv", "history.json", "curves.png"]
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["epoch", "loss", "val_loss"] and len(lines) == 4
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_lines_print_one_line_per_epoch(iris, capsys):
    fit(build(IRIS_MLP, seed=0), iris.train, iris.validation, epochs=2, batch_size=16, progress="lines")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "val_accuracy" in lines[0]

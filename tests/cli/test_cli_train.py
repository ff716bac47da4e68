"""The train, evaluate and cv commands, run as a new user would run them."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modelkeep.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_configs_are_valid():
    from modelkeep.train.config import load_config

    names = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert names == ["diabetes_regression.yaml", "digits_mlp.yaml", "fashion_mnist_cnn.yaml", "mnist_lstm.yaml"]
    for path in EXAMPLES.glob("*.yaml"):
        load_config(path)


def test_train_writes_the_run_folder_and_evaluate_reproduces_the_test_metrics(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", str(EXAMPLES / "digits_mlp.yaml"), "--run-dir", str(run_dir), "--quiet", "--json",
                 "--set", "epochs=3", "--set", "early_stopping.patience=1"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    for name in ("model.safetensors", "history.csv", "history.json", "curves.png", "config.yaml", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert printed["test"]["accuracy"] > 0.5
    assert main(["evaluate", str(run_dir / "model.safetensors"), "--data", "digits", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 180 and report["split"] == "test"
    assert report["metrics"]["accuracy"] == pytest.approx(printed["test"]["accuracy"], abs=1e-12)
    assert len(report["metrics"]["confusion_matrix"]) == 10

    from modelkeep.artifact import load

    model = load(run_dir / "model.safetensors")
    assert len(model.history) == printed["epochs_run"] and model.metrics["test_accuracy"] == printed["test"]["accuracy"]


def test_regression_config_trains_and_reports_r2(tmp_path, capsys):
    code = main(["train", str(EXAMPLES / "diabetes_regression.yaml"), "--run-dir", str(tmp_path), "--quiet",
                 "--json", "--set", "epochs=60"])
    assert code == 0
    test = json.loads(capsys.readouterr().out)["test"]
    assert set(test) == {"loss", "rmse", "mae", "r2"} and test["r2"] > 0.2


def test_cv_reports_each_fold_and_mean_and_std(capsys):
    code = main(["cv", str(EXAMPLES / "digits_mlp.yaml"), "--folds", "3", "--json", "--set", "epochs=2",
                 "--set", "early_stopping=false"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["fold"] for f in report["folds"]] == [1, 2, 3]
    assert sum(f["validation_samples"] for f in report["folds"]) == 1797
    accuracy = report["summary"]["accuracy"]
    assert 0.5 < accuracy["mean"] <= 1 and accuracy["std"] >= 0 and not math.isnan(accuracy["std"])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("modelkeep: error: "), err
    return err


def test_huge_learning_rate_stops_with_the_nan_message(tmp_path, capsys):
    code = main(["train", str(EXAMPLES / "digits_mlp.yaml"), "--run-dir", str(tmp_path), "--quiet",
                 "--set", "learning_rate=1e10", "--set", "optimizer=sgd", "--set", "loss=mse", "--set", "epochs=3",
                 "--set", "schedule=null"])
    assert code == 2
    assert "lower the learning rate" in _one_line_error(capsys)


@pytest.mark.parametrize("override,message", [
    ("loss=cross_entropyy", "unknown loss 'cross_entropyy'"),
    ("optimizer=adamm", "unknown optimizer 'adamm'; did you mean 'adam'"),
    ("data=missing.csv", "data file 'missing.csv' does not exist"),
    ("data=digitz", "unknown dataset 'digitz'; did you mean 'digits'"),
    ("epoch=3", "unknown config key(s) 'epoch' (did you mean 'epochs'?)"),
    ("schedule=cosin", "unknown schedule 'cosin'"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, override, message):
    code = main(["train", str(EXAMPLES / "digits_mlp.yaml"), "--run-dir", str(tmp_path), "--quiet", "--set", override])
    assert code == 2
    assert message in _one_line_error(capsys)


def test_missing_config_file_exits_2(capsys, tmp_path):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in _one_line_error(capsys)


def test_shape_mismatch_is_explained(tmp_path, capsys):
    assert main(["train", str(EXAMPLES / "digits_mlp.yaml"), "--run-dir", str(tmp_path), "--set", "data=iris"]) == 2
    assert "expects samples of shape [1, 8, 8]" in _one_line_error(capsys)

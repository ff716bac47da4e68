"""The train, evaluate and cv commands, run as a new user would run them."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modelkeep.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_configs_are_valid():
    from modelkeep.errors import ModelNotFoundError
    from modelkeep.transfer.config import load_training_config

    names = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert names == ["diabetes_regression.yaml", "digits_mlp.yaml", "fashion_mnist_cnn.yaml", "finetune_mnist.yaml",
                     "mnist_lstm.yaml"]
    for path in EXAMPLES.glob("*.yaml"):
        if path.name == "finetune_mnist.yaml":  # its base is what fashion_mnist_cnn.yaml trains: not here
            with pytest.raises(ModelNotFoundError, match="runs/fashion_mnist_cnn/model.safetensors"):
                load_training_config(path)
            continue
        load_training_config(path)


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


IRIS = {"model": {"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 8, "activation": "relu"},
                             {"kind": "Dense", "name": "out", "units": 3}]},
        "data": "iris", "epochs": 1, "checkpoint": False}


def _config(tmp_path, **changes) -> str:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**IRIS, **changes}))
    return str(path)


@pytest.mark.parametrize("config, overrides, message", [
    # issue 10 #3: cross-entropy on a regression target trained nothing and exited 0
    (str(EXAMPLES / "diabetes_regression.yaml"), ["loss=categorical_crossentropy"],
     "loss 'categorical_crossentropy' is for classes, but the targets of 'diabetes/train' are real values"),
    ("iris", ["loss=binary_crossentropy"], "'binary_crossentropy' is for two classes but 'iris/train' has 3 classes"),
    ("iris", ["optimizer={type: adam, betas: [0.9]}"], "optimizer 'adam' refuses the options {'betas': [0.9]}"),
    ("iris", ["batch_size=0"], "batch_size 0 is not a batch size"),
    # issue 10 #20: a name is a name, not a path
    ("iris", ["name=../../elsewhere"], "name '../../elsewhere' is not a plain name"),
    ("iris", ["name=/tmp/elsewhere"], "name '/tmp/elsewhere' is not a plain name"),
], ids=["cce-on-regression", "bce-on-3-classes", "adam-betas", "batch-size-0", "name-dotdot", "name-absolute"])
def test_mismatched_config_exits_2_with_one_line_before_training(tmp_path, capsys, config, overrides, message):
    config = _config(tmp_path) if config == "iris" else config
    command = ["train", config, "--run-dir", str(tmp_path / "run"), "--quiet"]
    assert main([*command, *(item for o in overrides for item in ("--set", o))]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_two_output_units_for_three_classes_exits_2(tmp_path, capsys):
    layers = [*IRIS["model"]["layers"][:2], {"kind": "Dense", "name": "out", "units": 2}]
    assert main(["train", _config(tmp_path, model={"layers": layers}), "--run-dir", str(tmp_path / "r")]) == 2
    assert "the model has 2 output units but 'iris/train' has 3 classes" in _one_line_error(capsys)


def test_a_name_without_run_dir_stays_inside_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", _config(tmp_path, name="../escaped"), "--quiet"]) == 2
    assert "not a plain name" in _one_line_error(capsys)
    assert not (tmp_path.parent / "escaped").exists()
    assert main(["train", _config(tmp_path, name="fine"), "--quiet"]) == 0
    assert (tmp_path / "runs" / "fine" / "model.safetensors").is_file()


def test_a_config_nested_5000_deep_exits_2(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["train", str(path)]) == 2
    assert "nests lists or mappings deeper than 32 levels" in _one_line_error(capsys)


def test_a_folder_given_as_config_is_named_a_folder(tmp_path, capsys):
    assert main(["train", str(tmp_path)]) == 2
    assert "is a folder, not a config file" in _one_line_error(capsys)


def test_an_unusable_run_dir_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["train", _config(tmp_path, epochs=50), "--run-dir", str(blocker / "run"), "--quiet"]) == 2
    assert "cannot create the run folder" in _one_line_error(capsys)
    assert main(["train", _config(tmp_path, epochs=50), "--run-dir", str(blocker), "--quiet"]) == 2
    assert "is a file" in _one_line_error(capsys)


def test_an_unwritable_run_dir_fails_before_training(tmp_path, capsys, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path).endswith("locked")
                        else real(path, mode, **kw))
    (tmp_path / "locked").mkdir()
    started = []
    import sys

    monkeypatch.setattr(sys.modules["modelkeep.train.fit"], "fit", lambda *a, **k: started.append(1))
    assert main(["train", _config(tmp_path), "--run-dir", str(tmp_path / "locked"), "--quiet"]) == 2
    assert "is not writable" in _one_line_error(capsys) and not started

"""`modelkeep train CONFIG --init-from FILE [--old-test DATA]` and `modelkeep update FILE --watch DIR --out NEW`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from modelkeep import load
from modelkeep.cli.main import main

from task_specs import TOKEN_SPEC, binary_data, dense_spec, multiclass_data, regression_data, token_data

TASKS = {
    "binary_one_logit": (binary_data, dense_spec(4, 1), "binary_crossentropy"),
    "multiclass": (multiclass_data, dense_spec(4, 3), "categorical_crossentropy"),
    "regression": (regression_data, dense_spec(3, 1), "mse"),
    "token_sequence": (token_data, TOKEN_SPEC, "categorical_crossentropy"),
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(tmp_path, name, spec, data, loss="categorical_crossentropy", **extra):
    config = {"model": spec, "data": {"path": data, **extra.pop("data_options", {})}, "loss": loss, "epochs": 3,
              "batch_size": 32, "learning_rate": 0.01, "checkpoint": False, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("task", list(TASKS))
def test_train_init_from_continues_each_task_kind(task, tmp_path, capsys):
    make, spec, loss = TASKS[task]
    rng = np.random.default_rng(0)
    for name in ("old", "new"):
        x, y = make(rng, 200)
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    old = _config(tmp_path, "old", spec, "old.npz", loss)
    new = _config(tmp_path, "new", spec, "new.npz", loss)
    assert main(["train", str(old), "--run-dir", str(tmp_path / "r1"), "--quiet"]) == 0
    parent = tmp_path / "r1" / "model.safetensors"
    capsys.readouterr()
    assert main(["train", str(new), "--run-dir", str(tmp_path / "r2"), "--quiet", "--json", "--init-from",
                 str(parent), "--old-test", str(tmp_path / "old.npz")]) == 0
    printed = json.loads(capsys.readouterr().out)
    table = printed["evaluation"]
    assert set(table) == {"old_test", "new_test"}
    # the old test set is the test split the parent held out (its recorded source, fractions and seed)
    assert table["old_test"]["before"]["loss"] == pytest.approx(load(parent).metrics["test_loss"], rel=1e-6)
    child = load(tmp_path / "r2" / "model.safetensors")
    assert child.lineage["relation"] == "continued"
    assert child.lineage["parent"]["content_hash"] == load(parent).content_hash
    assert child.lineage["data_fingerprints"]["parent"] == load(parent).manifest.provenance["data_fingerprint"]
    assert child.lineage["evaluation"] == table


def test_forgetting_is_printed_as_a_before_after_table(tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    np.savez(tmp_path / "old.npz", x=x[y < 5], y=y[y < 5])
    np.savez(tmp_path / "new.npz", x=x[y >= 5], y=y[y >= 5])
    spec = {"layers": [{"kind": "Input", "shape": [64]}, {"kind": "Dense", "units": 32, "activation": "relu"},
                       {"kind": "Dense", "units": 10}]}
    labels = {"labels": [str(i) for i in range(10)]}
    old = _config(tmp_path, "old", spec, "old.npz", data_options=labels, preprocessing="standardize", epochs=6)
    new = _config(tmp_path, "new", spec, "new.npz", data_options=labels, preprocessing="standardize", epochs=6)
    assert main(["train", str(old), "--run-dir", str(tmp_path / "r1"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", str(new), "--run-dir", str(tmp_path / "r2"), "--quiet", "--init-from",
                 str(tmp_path / "r1" / "model.safetensors"), "--old-test", str(tmp_path / "old.npz")]) == 0
    out = capsys.readouterr().out
    assert "before and after continued training" in out
    rows = {tuple(cells[:2]): cells[2:] for cells in
            ([c.strip() for c in line.strip("│┃ ").split("│")] for line in out.splitlines() if "│" in line)
            if len(cells) == 5}
    before, after, change = (float(v) for v in rows[("old test", "accuracy")])
    assert before > 0.9 and after < before - 0.3 and change == pytest.approx(after - before, abs=2e-4)
    assert float(rows[("new test", "accuracy")][0]) == 0.0 and float(rows[("new test", "accuracy")][1]) > 0.85


def test_refusals_are_one_line_and_exit_2(tmp_path, capsys):
    x, y = multiclass_data(np.random.default_rng(0), 100)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    config = _config(tmp_path, "c", dense_spec(4, 3), "data.npz")
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), "--quiet", "--old-test", "data.npz"]) == 2
    assert "needs a model to continue" in capsys.readouterr().err
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), "--quiet", "--init-from",
                 str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_update_watches_a_folder_and_a_second_run_takes_the_new_files(tmp_path, capsys):
    x, y = multiclass_data(np.random.default_rng(0), 200)
    np.savez(tmp_path / "old.npz", x=x, y=y)
    config = _config(tmp_path, "old", dense_spec(4, 3), "old.npz")
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r1"), "--quiet"]) == 0
    parent = tmp_path / "r1" / "model.safetensors"
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for index in range(3):
        xb, yb = multiclass_data(np.random.default_rng(10 + index), 50)
        np.savez(incoming / f"batch-{index:02d}.npz", x=xb, y=yb)
    capsys.readouterr()
    command = ["update", str(parent), "--watch", str(incoming), "--out", str(tmp_path / "new.safetensors"),
               "--checkpoint", str(tmp_path / "ck"), "--every", "2", "--batch-size", "25", "--json",
               "--old-test", str(tmp_path / "old.npz")]
    assert main(command) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["batches"] == 6 and first["files"] == ["batch-00.npz", "batch-01.npz", "batch-02.npz"]
    assert set(first["evaluation"]) == {"old_test"}
    xb, yb = multiclass_data(np.random.default_rng(20), 50)
    np.savez(incoming / "batch-03.npz", x=xb, y=yb)
    assert main(command) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["batches"] == 8 and second["files"] == [f"batch-{i:02d}.npz" for i in range(4)]  # in all
    child = load(tmp_path / "new.safetensors")
    import jsonschema

    from modelkeep.artifact.manifest import manifest_schema

    jsonschema.validate(child.manifest.to_dict(), manifest_schema())
    assert child.lineage["relation"] == "continued" and child.lineage["mode"] == "stream"
    assert child.lineage["parent"]["content_hash"] == load(parent).content_hash
    assert child.optimizer_state() is not None  # the next update continues its moments
    assert main(command[:6] + ["--max-batches", "0", "--checkpoint", str(tmp_path / "other")]) == 2
    assert "no batch" in capsys.readouterr().err


def test_a_config_continue_section_does_what_the_flags_do(tmp_path, capsys):
    make = multiclass_data
    rng = np.random.default_rng(0)
    for name in ("old", "new"):
        x, y = make(rng, 200)
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    assert main(["train", str(_config(tmp_path, "old", dense_spec(4, 3), "old.npz")), "--run-dir",
                 str(tmp_path / "r1"), "--quiet"]) == 0
    section = {"from": str(tmp_path / "r1" / "model.safetensors"), "old_test": "old.npz"}
    config = _config(tmp_path, "new", dense_spec(4, 3), "new.npz", **{"continue": section})
    capsys.readouterr()
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r2"), "--quiet", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)["evaluation"]
    assert set(table) == {"old_test", "new_test"}
    assert load(tmp_path / "r2" / "model.safetensors").lineage["relation"] == "continued"
    bad = _config(tmp_path, "bad", dense_spec(4, 3), "new.npz", **{"continue": {"form": "x"}})
    assert main(["train", str(bad), "--run-dir", str(tmp_path / "r3"), "--quiet"]) == 2
    assert "continue must be a mapping with 'from'" in capsys.readouterr().err

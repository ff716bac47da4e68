"""``modelkeep export``: the four kinds of task through the command line, the printed maximum absolute
difference, onnxruntime against ``predict`` on fresh inputs, and one-line refusals (status 2)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from export_tasks import TASKS, fresh_inputs, raw_outputs, run_onnx, train_and_save
from modelkeep import load
from modelkeep.cli.main import main


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-tasks")
    return {task: train_and_save(task, folder / f"{task}.safetensors") for task in TASKS}


@pytest.mark.parametrize("task", list(TASKS))
def test_export_prints_the_difference_and_the_file_matches_predict(task, task_files, tmp_path, capsys):
    out = tmp_path / f"{task}.onnx"
    assert main(["export", task_files[task], "--format", "onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    found = re.search(r"max abs diff ([0-9.e+-]+) \(tolerance 0\.0001\)", printed)
    assert found and float(found.group(1)) <= 1e-5, printed
    assert f"wrote {out}" in printed
    model = load(task_files[task])
    x = fresh_inputs(task, n=5, seed=3)
    outputs = run_onnx(out, x)
    assert list(outputs) == [model.manifest.signature["outputs"][0]["name"]]  # logits only unless asked
    np.testing.assert_allclose(next(iter(outputs.values())), raw_outputs(model, x), atol=1e-5, rtol=0)


def test_json_probabilities_and_options(task_files, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", task_files["binary_one_logit"], str(out), "--probabilities", "--opset", "18",
                 "--tolerance", "1e-3", "--static-batch", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["outputs"] == ["head", "probabilities"] and printed["opset"] == 18
    assert printed["tolerance"] == 1e-3 and printed["dynamic_batch"] is False
    assert printed["preprocessing_folded"] is True and printed["max_abs_diff"] <= 1e-5
    x = fresh_inputs("binary_one_logit", n=1)
    np.testing.assert_allclose(run_onnx(out, x)["probabilities"], load(task_files["binary_one_logit"]).predict(x)
                               .probabilities, atol=1e-6)


def test_a_failed_check_is_one_line_status_2_and_no_file(task_files, tmp_path, capsys):
    out = tmp_path / "lm.onnx"
    out.write_bytes(b"previous export")  # a failed export leaves an earlier file as it was
    tokens = fresh_inputs("token_sequence", n=64)
    np.savez(tmp_path / "tokens.npz", x=tokens, y=np.roll(tokens, -1, axis=1))
    assert main(["export", task_files["token_sequence"], str(out), "--tolerance", "0",
                 "--data", str(tmp_path / "tokens.npz")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "does not match the model: max abs diff" in error
    assert out.read_bytes() == b"previous export" and sorted(os.listdir(tmp_path)) == ["lm.onnx", "tokens.npz"]


@pytest.mark.parametrize("arguments, message", [
    (["OUT.weights"], "cannot tell the format"),
    (["OUT.pt", "--quantize", "int8"], "--quantize apply to --format onnx only"),
    (["OUT.onnx", "--tolerance", "-1"], "a finite number >= 0"),
    (["OUT.onnx", "--data", "no-such-dataset"], "no-such-dataset"),
])
def test_refusals(arguments, message, task_files, tmp_path, capsys):
    arguments = [str(tmp_path / a) if a.startswith("OUT") else a for a in arguments]
    try:
        status = main(["export", task_files["multiclass"], *arguments])
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    assert status == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert not [p for p in os.listdir(tmp_path)]


def test_keras_format(task_files, tmp_path, capsys):
    pytest.importorskip("modelkeep.export.to_keras")
    out = tmp_path / "m.keras"
    assert main(["export", task_files["multiclass"], "--format", "keras", str(out)]) == 0
    assert f"wrote {out} (keras)" in capsys.readouterr().out
    import zipfile

    assert {"config.json", "metadata.json", "model.weights.h5"} <= set(zipfile.ZipFile(out).namelist())

"""The command line, run as a user runs it: the installed ``modelkeep`` console script."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from modelkeep.quickstart import DIGITS_CNN


def modelkeep(*args: str, cwd=None) -> subprocess.CompletedProcess:
    exe = shutil.which("modelkeep") or sys.executable
    prefix = [exe] if exe != sys.executable else [sys.executable, "-m", "modelkeep"]
    return subprocess.run([*prefix, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    return out, modelkeep("quickstart", "--out", str(out), "--quiet")


def test_quickstart_trains_saves_reloads_and_reaches_95_percent(quickstart_run):
    out, result = quickstart_run
    assert result.returncode == 0, result.stderr
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", result.stdout).group(1))
    assert accuracy >= 0.95
    assert "reloaded it from the file" in result.stdout
    assert (out / "model.safetensors").is_file() and (out / "spec.json").is_file()


def test_quickstart_file_reads_with_safetensors_and_inspect_sums(quickstart_run):
    out, _ = quickstart_run
    path = out / "model.safetensors"
    result = modelkeep("inspect", str(path), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert sum(layer["parameters"] for layer in info["layers"]) == info["total_parameters"]
    with safe_open(str(path), framework="pt") as handle:
        elements = sum(handle.get_tensor(name).numel() for name in handle.keys())
    assert elements == info["total_parameters"]  # the digits CNN has no buffers
    assert {"name", "kind", "parameters"} <= set(info["layers"][1])
    assert info["labels"] == [str(i) for i in range(10)]


def test_inspect_human_output(quickstart_run):
    out, _ = quickstart_run
    result = modelkeep("inspect", str(out / "model.safetensors"))
    assert result.returncode == 0
    assert "parameters" in result.stdout and "conv1" in result.stdout


def test_predict_prints_class_names(quickstart_run, digits_splits, tmp_path):
    out, _ = quickstart_run
    samples = tmp_path / "x.npy"
    np.save(samples, digits_splits.test.x[:4])
    result = modelkeep("predict", str(out / "model.safetensors"), str(samples), "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 4
    from modelkeep.artifact import load

    expected = load(out / "model.safetensors").predict(digits_splits.test.x[:4])
    assert [r["label"] for r in records] == expected.labels
    assert [r["probability"] for r in records] == pytest.approx(expected.probabilities.max(1).tolist())
    table = modelkeep("predict", str(out / "model.safetensors"), str(samples))
    assert table.returncode == 0 and "probability" in table.stdout


def test_params_on_spec_files(tmp_path):
    import yaml

    (tmp_path / "cnn.json").write_text(json.dumps(DIGITS_CNN))
    (tmp_path / "cnn.yaml").write_text(yaml.safe_dump(DIGITS_CNN))
    totals = []
    for name in ("cnn.json", "cnn.yaml"):
        result = modelkeep("params", str(tmp_path / name), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["total"] == sum(layer["parameters"] for layer in report["layers"])
        totals.append(report["total"])
    from modelkeep.nn import build

    assert totals[0] == totals[1] == sum(p.numel() for p in build(DIGITS_CNN).parameters())
    human = modelkeep("params", str(tmp_path / "cnn.json"))
    assert "3*3*1*32+32" in human.stdout


def _one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("modelkeep: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_errors_exit_2_with_one_line(quickstart_run, tmp_path):
    out, _ = quickstart_run
    data = (out / "model.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 3])
    _one_line_error(modelkeep("inspect", str(truncated)), "truncated")
    _one_line_error(modelkeep("predict", str(truncated), str(tmp_path / "x.npy")), "truncated")
    _one_line_error(modelkeep("inspect", str(tmp_path / "absent.safetensors")), "no such file")
    foreign = tmp_path / "foreign.safetensors"
    torch.save({"w": torch.ones(2)}, foreign)
    _one_line_error(modelkeep("inspect", str(foreign)), "zip archive")
    bad_spec = tmp_path / "bad.json"
    bad_spec.write_text(json.dumps({"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "unit": 3}]}))
    _one_line_error(modelkeep("params", str(bad_spec)), "dense_1", "unknown field 'unit'")


def test_debug_shows_traceback(tmp_path):
    result = modelkeep("--debug", "inspect", str(tmp_path / "absent.safetensors"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_system_errors_are_one_line_too(tmp_path):
    folder = tmp_path / "a-folder.safetensors"
    folder.mkdir()
    _one_line_error(modelkeep("inspect", str(folder)), "folder")
    _one_line_error(modelkeep("params", str(folder)))

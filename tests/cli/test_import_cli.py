"""``modelkeep import``: the task matrix from the command line, every target flag, and refusals as one line.

Run in-process through ``main`` (as the console script runs it); the imported file must predict what the
original network does.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modelkeep import load
from modelkeep.cli.main import main
from modelkeep.nn import build

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "importers"))
from pytorch_nets import TASKS, MultiNet, RunsACommand, answers, batch, dense_spec, expected_answers  # noqa: E402


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(map(str, argv)), report_unexpected=True)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelkeep: error: "), err
    return lines[0]


@pytest.mark.parametrize("task", list(TASKS))
def test_the_task_matrix_imports_from_the_command_line(task, tmp_path, capsys):
    spec, _, _, task_kind = TASKS[task]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    original = build(spec, seed=4).eval()
    torch.save(torch.nn.DataParallel(original).state_dict(), tmp_path / "pytorch_model.bin")
    out = tmp_path / "out.safetensors"
    status, stdout, err = run(capsys, "import", tmp_path / "pytorch_model.bin", out, "--spec", tmp_path / "spec.json",
                              "--task", task_kind, "--strict")
    assert status == 0, err
    assert "(pytorch, sha256 " in stdout and f"wrote {out}" in stdout
    assert f"loaded {len(original.state_dict())} tensors (prefix 'module.' removed)" in stdout
    x = batch(task)
    with torch.no_grad():
        logits = original(x)
    model = load(out)
    assert np.abs(answers(model.predict(x.numpy())) - expected_answers(task, logits)).max() <= 1e-6


def test_a_class_by_name_with_constructor_arguments_needs_trust_code(tmp_path, capsys):
    original = MultiNet(hidden=12).eval()
    torch.save(original.state_dict(), tmp_path / "net.pth")
    out = tmp_path / "out.safetensors"
    argv = ["import", tmp_path / "net.pth", out, "--class", "pytorch_nets:MultiNet", "--set", "hidden=12"]
    status, _, err = run(capsys, *argv)
    assert status == 2 and "--trust-code" in one_line_error(err) and not out.exists()
    status, stdout, err = run(capsys, *argv, "--trust-code", "--strict")
    assert status == 0, err
    assert "matched onto class pytorch_nets:MultiNet" in stdout
    x = batch("multiclass")
    with torch.no_grad():
        assert torch.allclose(load(out, model_class=MultiNet).module(x), original(x), atol=1e-6)


def test_map_renames_a_plain_state_dict_onto_a_spec(tmp_path, capsys):
    original = MultiNet().eval()
    torch.save(original.state_dict(), tmp_path / "net.pt")
    (tmp_path / "spec.json").write_text(json.dumps(dense_spec(4, 3)))
    out = tmp_path / "out.safetensors"
    status, stdout, err = run(capsys, "import", tmp_path / "net.pt", out, "--spec", tmp_path / "spec.json", "--map",
                              "body.0=layers.dense_1.0", "--map", "head=layers.head", "--strict", "--labels", "a,b,c")
    assert status == 0, err
    model = load(out)
    assert model.manifest.labels == ["a", "b", "c"]
    x = batch("multiclass")
    with torch.no_grad():
        assert torch.allclose(model.module(x), original(x), atol=1e-6)


def test_a_zoo_model_and_json_output(tmp_path, capsys):
    original = build(__import__("modelkeep").get_spec("mlp", input_features=5, hidden=(6,), num_classes=2), seed=0)
    save_file({f"_orig_mod.{k}": v for k, v in original.state_dict().items()}, tmp_path / "mlp.safetensors")
    status, stdout, err = run(capsys, "import", tmp_path / "mlp.safetensors", tmp_path / "out.safetensors", "--zoo",
                              "mlp", "--set", "input_features=5", "--set", "hidden=[6]", "--set", "num_classes=2",
                              "--json")
    assert status == 0, err
    report = json.loads(stdout)
    assert report["format"] == "safetensors" and report["complete"] and report["stripped_prefix"] == "_orig_mod."
    assert report["target"] == "zoo mlp" and len(report["sha256"]) == 64


def test_refusals_are_one_line_with_status_2_and_write_nothing(tmp_path, capsys):
    (tmp_path / "spec.json").write_text(json.dumps(dense_spec(4, 5)))
    torch.save(build(dense_spec(4, 3), seed=0).state_dict(), tmp_path / "w.pt")
    out = tmp_path / "out.safetensors"
    status, _, err = run(capsys, "import", tmp_path / "w.pt", out, "--spec", tmp_path / "spec.json", "--strict")
    assert status == 2 and "shape mismatch layers.head.weight" in one_line_error(err) and not out.exists()
    status, _, err = run(capsys, "import", tmp_path / "w.pt", out)
    assert status == 2 and "--spec" in one_line_error(err) and not out.exists()
    marker = tmp_path / "PWNED"
    torch.save({"w": torch.ones(1), "x": RunsACommand(marker)}, tmp_path / "evil.pt")
    status, _, err = run(capsys, "import", tmp_path / "evil.pt", out, "--spec", tmp_path / "spec.json")
    assert status == 2 and "'posix.system'" in one_line_error(err)
    assert not marker.exists() and not out.exists()
    (tmp_path / "notes.txt").write_text("not a model")
    status, _, err = run(capsys, "import", tmp_path / "notes.txt", out, "--spec", tmp_path / "spec.json")
    assert status == 2 and "cannot import" in one_line_error(err)


def test_names_from_the_file_are_printed_escaped(tmp_path, capsys):
    state = build(dense_spec(4, 3), seed=0).state_dict()
    save_file({**state, "evil\x1b]0;owned\x07": torch.zeros(1)}, tmp_path / "w.safetensors")
    (tmp_path / "spec.json").write_text(json.dumps(dense_spec(4, 3)))
    status, stdout, err = run(capsys, "import", tmp_path / "w.safetensors", tmp_path / "out.safetensors", "--spec",
                              tmp_path / "spec.json")
    assert status == 0, err
    assert "\x1b" not in stdout and "\x07" not in stdout and "evil\\x1b]0;owned\\x07" in stdout

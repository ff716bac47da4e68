"""`modelkeep train CONFIG --run-dir DIR`: run again after any interruption, end with the same model file."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modelkeep.artifact.tensors import read_tensors
from modelkeep.cli import train as train_command
from modelkeep.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from torture_resume import torture_cli  # noqa: E402

CONFIG = """\
name: resume_cli
model:
  name: resume_mlp
  layers:
    - {kind: Input, name: image, shape: [1, 8, 8]}
    - {kind: Flatten, name: flatten}
    - {kind: Dense, name: hidden, units: 64, activation: relu}
    - {kind: Dropout, name: dropout, rate: 0.2}
    - {kind: Dense, name: logits, units: 10}
data: {name: digits, split: [0.8, 0.1, 0.1]}
preprocessing: {type: standardize, per_feature: false}
optimizer: adam
learning_rate: 0.002
schedule: {type: cosine, warmup_epochs: 1}
epochs: 3
batch_size: 64
early_stopping: {monitor: val_loss, patience: 3, restore_best_weights: true}
deterministic: true
device: cpu
checkpoint: {every_steps: 4, durable: false}
"""
STEPS = 23  # 1,437 training digits in batches of 64


class Crash(RuntimeError):
    pass


# Every run here, in this process or a subprocess, computes with one intra-op thread, so all agree.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "resume.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    assert main(["train", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    return final(run_dir)


def final(run_dir: Path):
    history = json.loads((run_dir / "history.json").read_text())
    history.pop("time")
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    return read_tensors(run_dir / "model.safetensors"), history, test


def assert_same(run_dir: Path, reference) -> None:
    tensors, history, test = final(run_dir)
    assert set(tensors) == set(reference[0]) and all(torch.equal(tensors[k], reference[0][k]) for k in tensors)
    assert history == reference[1]  # the full history: the epochs before the interruption are in it
    assert test == reference[2]


@pytest.mark.parametrize("hook, at, every, resumes_at", [
    ("on_step_end", 10, 4, "at epoch 1, after batch 8 (step 8)"),          # mid-epoch
    # inside the epoch boundary: the last batch is checkpointed, the end-of-epoch work is not
    ("on_epoch_end", 1, 1, f"at epoch 1, after batch {STEPS} (step {STEPS})"),
    ("on_step_end", STEPS + 2, 1000, f"at the end of epoch 1 (step {STEPS})"),  # just after it
], ids=["mid-epoch", "inside-boundary", "after-boundary"])
def test_interrupted_train_run_again_resumes_and_ends_identical(tmp_path, config, reference, monkeypatch, capsys,
                                                                hook, at, every, resumes_at):
    def crash(self, state, logs):
        if (state.step if hook == "on_step_end" else state.epoch) == at:
            raise Crash(f"{hook} {at}")

    command = ["train", str(config), "--run-dir", str(tmp_path), "--quiet", "--set", f"checkpoint.every_steps={every}"]
    with monkeypatch.context() as patch:
        patch.setattr(train_command._ResumeNotice, hook, crash, raising=False)
        with pytest.raises(Crash):
            main(command)
    capsys.readouterr()
    assert main(command) == 0
    assert f"resuming from checkpoint-{int(resumes_at.split('step ')[1][:-1]):09d} {resumes_at}" in capsys.readouterr().out
    assert_same(tmp_path, reference)


def test_restart_moves_old_checkpoints_aside_and_starts_over(tmp_path, config, reference, monkeypatch, capsys):
    command = ["train", str(config), "--run-dir", str(tmp_path), "--quiet"]
    with monkeypatch.context() as patch:
        patch.setattr(train_command._ResumeNotice, "on_step_end",
                      lambda self, state, logs: (_ for _ in ()).throw(Crash()) if state.step == 30 else None,
                      raising=False)
        with pytest.raises(Crash):
            main(command)
    old = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    capsys.readouterr()
    assert main([*command, "--restart"]) == 0
    out = capsys.readouterr().out
    assert "--restart: moved the earlier checkpoints to" in out and "resuming" not in out
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "previous").iterdir()) == old
    assert_same(tmp_path, reference)


def test_changed_config_is_refused_with_a_hint(tmp_path, config, capsys):
    assert main(["train", str(config), "--run-dir", str(tmp_path), "--quiet", "--set", "epochs=1"]) == 0
    capsys.readouterr()
    assert main(["train", str(config), "--run-dir", str(tmp_path), "--quiet", "--set", "epochs=2"]) == 2
    error = capsys.readouterr().err
    assert "other settings (epochs: 1 -> 2)" in error and "--restart" in error


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelkeep", *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_sigterm_saves_exits_cleanly_and_prints_the_command_that_resumes(tmp_path, config):
    longer = ["--set", "epochs=20", "--set", "checkpoint.every_steps=1000"]  # saves only at epoch ends
    assert main(["train", str(config), "--run-dir", str(tmp_path / "reference"), "--quiet", *longer]) == 0
    reference = final(tmp_path / "reference")
    run_dir = tmp_path / "run dir"  # a space: the printed command must quote it
    process = subprocess.Popen(cli("train", str(config), "--run-dir", str(run_dir), "--quiet", *longer),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    # The first epoch's checkpoint shows training is under way; the signal then lands inside a later epoch.
    deadline = time.monotonic() + 120
    while not any((run_dir / "checkpoints").glob("checkpoint-*.safetensors")) and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 128 + signal.SIGTERM, stderr
    match = re.search(r"received SIGTERM; checkpoint (checkpoint-\d+\.safetensors) saved\. Resume with: (.+)", stderr)
    assert match, stderr
    assert (run_dir / "checkpoints" / match.group(1)).is_file()
    command = shlex.split(match.group(2))
    assert command[:2] == ["modelkeep", "train"] and str(run_dir) in command and "--restart" not in command
    resumed = subprocess.run(cli(*command[1:]), capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {match.group(1).removesuffix('.safetensors')}" in resumed.stdout
    assert_same(run_dir, reference)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the CI torture forks its lives")
def test_ten_sigkills_of_modelkeep_train_end_bit_identical(tmp_path):
    result = torture_cli(10, seed=1, fork=True, epochs=3, hidden=256, work=tmp_path)
    assert result.failures == []
    assert result.kills == 10 and result.rounds_finished >= 1 and result.ok

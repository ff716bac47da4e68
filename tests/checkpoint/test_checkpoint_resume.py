"""Interrupted and resumed training ends bit-identical to a run that never stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checkpoint_train_script import Config, Crash, load_data, run  # noqa: E402

from modelkeep.artifact.tensors import read_tensors  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "checkpoint_train_script.py"
BATCHES = 29  # 1797 digits in batches of 64


@pytest.fixture(scope="module")
def data():
    return load_data()


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    return run(tmp_path_factory.mktemp("reference"), Config(durable=False), data)


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("crash", [
    {"crash_after_step": 13},                 # inside the first epoch, between checkpoints
    {"crash_after_step": BATCHES},            # after the last batch, before the epoch's end work
    {"crash_in_epoch_end": 0},                # inside the end-of-epoch work (validation done, not saved)
    {"crash_after_step": BATCHES + 1},        # first step of the next epoch
])
@pytest.mark.parametrize("asynchronous", [False, True])
def test_crash_and_resume_is_bit_identical(tmp_path, data, reference, crash, asynchronous):
    config = Config(every=5, asynchronous=asynchronous, durable=False)
    with pytest.raises(Crash):
        run(tmp_path, Config(**{**config.__dict__, **crash}), data)
    assert same(run(tmp_path, config, data), reference)


def data_file(tmp_path, data):
    path = tmp_path / "digits.npz"
    np.savez(path, x=(data[0] * 16.0).numpy(), y=data[1].numpy())
    return path


def start(directory, data_path, *extra):
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(directory), "--data", str(data_path), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_ready(process):
    line = process.stdout.readline()
    assert line.startswith("ready"), line + process.stderr.read()
    return int(line.split()[1].split("=")[1])


def test_sigkill_during_training_then_resume_is_bit_identical(tmp_path, data, reference):
    data_path = data_file(tmp_path, data)
    run_dir, out = tmp_path / "run", tmp_path / "final.safetensors"
    process = start(run_dir, data_path, "--every", "1", "--async", "--no-durable", "--step-sleep", "0.005")
    wait_ready(process)
    time.sleep(0.25)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    resumed = start(run_dir, data_path, "--every", "1", "--async", "--no-durable", "--out", str(out))
    step = wait_ready(resumed)
    stdout, stderr = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, stderr
    assert step > 0, "the first run was killed before its first checkpoint; the test proves nothing"
    assert same(read_tensors(out), reference)


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path, data, reference):
    data_path = data_file(tmp_path, data)
    run_dir, out = tmp_path / "run", tmp_path / "final.safetensors"
    # no scheduled save before the signal; steps slowed so the signal lands mid-epoch
    process = start(run_dir, data_path, "--every", "1000", "--step-sleep", "0.01")
    wait_ready(process)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "received SIGTERM; checkpoint checkpoint-" in stdout and "Resume with:" in stdout
    assert any(name.startswith("checkpoint-") for name in os.listdir(run_dir))
    resumed = start(run_dir, data_path, "--every", "1000", "--out", str(out))
    assert wait_ready(resumed) > 0
    resumed.communicate(timeout=60)
    assert resumed.returncode == 0
    assert same(read_tensors(out), reference)

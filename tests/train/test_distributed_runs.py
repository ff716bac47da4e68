"""Training on several processes for real: torchrun (``python -m torch.distributed.run --standalone``), gloo, loopback.

Each run here is a fresh set of processes (tests/distributed_fit_script.py or ``-m modelkeep train``), killed
with SIGKILL where a test says so, and compared with runs on another number of processes. The long
tortures (resharding onto 3 processes, FSDP2) are marked slow; one kill-and-resume on 2 processes and one
resume on 1 process stay in the default set.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelkeep.artifact.tensors import read_tensors

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "distributed_fit_script.py"
TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")
KILL_AT = 10  # optimizer steps: mid-epoch (30 steps of 48 digits per epoch); the newest checkpoint is step 8

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def launch(processes: int, *arguments: str, module: bool = False, check: bool = True,
           cwd: Path = ROOT, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    """``arguments`` run on ``processes`` processes (torchrun standalone: a free port each time), or plainly on 1."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_KEYS}
    env["OMP_NUM_THREADS"] = "1"
    target = ["-m", *arguments] if module else [str(script), *arguments]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   *target]
    else:
        command = [sys.executable, *target]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-6000:]}")
    return done


def outcome(folder: Path) -> dict:
    result = json.loads((folder / "result.json").read_text())
    result["weights"] = read_tensors(folder / "weights.safetensors", mmap=False)
    return result


def same_weights(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def losses(history: list[dict], keys=("loss", "val_loss", "val_accuracy")) -> list[float]:
    return [record[key] for record in history for key in keys]


def every_rank_saw_the_same(folder: Path, processes: int) -> None:
    seen = [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(processes)]
    for view in seen:
        view.pop("rank")
    assert all(view == seen[0] for view in seen), "the processes disagree on the metrics"


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """An uninterrupted 2-process run, and the checkpoints of one SIGKILLed after step KILL_AT."""
    base = tmp_path_factory.mktemp("two_process")
    launch(2, str(base / "reference"), "--checkpoint", str(base / "reference-checkpoints"))
    killed = launch(2, str(base / "killed"), "--checkpoint", str(base / "checkpoints"),
                    "--kill-at-step", str(KILL_AT), check=False)
    assert killed.returncode != 0 and not (base / "killed" / "result.json").exists(), "the run was not killed"
    return base


def resumed_copy(base: Path, tmp_path: Path) -> Path:
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(base / "checkpoints", checkpoints)
    return checkpoints


def test_a_two_process_run_killed_and_resumed_ends_bit_identical(two_process_runs, tmp_path):
    checkpoints = resumed_copy(two_process_runs, tmp_path)
    launch(2, str(tmp_path / "out"), "--checkpoint", str(checkpoints))  # the same command as the killed run
    reference, resumed = outcome(two_process_runs / "reference"), outcome(tmp_path / "out")
    assert resumed["resumed_from"] == "checkpoint-000000008.safetensors"
    assert same_weights(resumed["weights"], reference["weights"])
    assert resumed["history"] == reference["history"] and resumed["test"] == reference["test"]
    every_rank_saw_the_same(tmp_path / "out", 2)
    every_rank_saw_the_same(two_process_runs / "reference", 2)


def test_a_two_process_checkpoint_resumes_on_one_process_where_it_stopped(two_process_runs, tmp_path):
    checkpoints = resumed_copy(two_process_runs, tmp_path)
    launch(1, str(tmp_path / "out"), "--checkpoint", str(checkpoints))
    reference, resumed = outcome(two_process_runs / "reference"), outcome(tmp_path / "out")
    assert resumed["world_size"] == 1 and resumed["resumed_from"] == "checkpoint-000000008.safetensors"
    assert len(resumed["history"]) == len(reference["history"])
    # dropout masks differ with the number of processes: close, not equal
    assert losses(resumed["history"]) == pytest.approx(losses(reference["history"]), rel=0.05)
    assert not same_weights(resumed["weights"], reference["weights"])


CONFIG = """\
name: distributed_digits
model:
  name: distributed_mlp
  layers:
    - {kind: Input, name: image, shape: [1, 8, 8]}
    - {kind: Flatten, name: flatten}
    - {kind: Dense, name: hidden, units: 64, activation: relu}
    - {kind: Dense, name: logits, units: 10}
data: {name: digits, split: [0.8, 0.1, 0.1]}
preprocessing: {type: standardize, per_feature: false}
learning_rate: 0.003
epochs: 2
batch_size: 48
metrics: [accuracy, f1]
seed: 0
deterministic: true
device: cpu
strategy: ddp
checkpoint: {every_steps: 10, asynchronous: false, durable: false}
"""


def test_torchrun_modelkeep_train_agrees_with_one_process_and_only_the_coordinator_writes(tmp_path):
    config = tmp_path / "digits.yaml"
    config.write_text(CONFIG)
    two = launch(2, "modelkeep", "train", str(config), "--run-dir", str(tmp_path / "two"), "--json", module=True)
    one = launch(1, "modelkeep", "train", str(config), "--run-dir", str(tmp_path / "one"), "--json", module=True)
    assert two.stdout.count('"run_dir"') == 1, two.stdout  # one report: the coordinator's
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one").iterdir())
    history = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("two", "one")]
    columns = [[value for key in ("loss", "val_loss", "val_accuracy") for value in h[key]] for h in history]
    # the same global batch of 48: the same gradients up to float sums and one padded sample per epoch
    assert len(columns[0]) == 6 and columns[0] == pytest.approx(columns[1], rel=2e-3)
    assert json.loads(two.stdout[two.stdout.index("{"):])["test"]["accuracy"] > 0.85


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 3])
def test_resharded_resume_continues_the_loss_curve(tmp_path, processes):
    """Saved by 2 processes, resumed on 1 or 3: without dropout the run matches an uninterrupted single process."""
    plain = ("--dropout", "0")
    launch(1, str(tmp_path / "single"), *plain)
    launch(2, str(tmp_path / "killed"), "--checkpoint", str(tmp_path / "checkpoints"), "--kill-at-step",
           str(KILL_AT), *plain, check=False)
    launch(processes, str(tmp_path / "out"), "--checkpoint", str(tmp_path / "checkpoints"), *plain)
    single, resumed = outcome(tmp_path / "single"), outcome(tmp_path / "out")
    assert resumed["resumed_from"] == "checkpoint-000000008.safetensors" and resumed["world_size"] == processes
    assert losses(resumed["history"]) == pytest.approx(losses(single["history"]), rel=2e-3)
    every_rank_saw_the_same(tmp_path / "out", processes)


@pytest.mark.slow
def test_fsdp2_killed_resumes_bit_identical_and_reshards_onto_three_processes(tmp_path):
    """Sharded checkpoints (checkpoint/sharded.py): every process writes its part; a SIGKILLed 2-process run
    resumes bit-identical on 2 processes and, from the same checkpoint, within tolerance on 3."""
    fsdp = ("--strategy", "fsdp", "--dropout", "0")
    launch(1, str(tmp_path / "single"), "--dropout", "0")
    launch(2, str(tmp_path / "reference"), *fsdp)
    launch(2, str(tmp_path / "killed"), "--checkpoint", str(tmp_path / "checkpoints"), "--kill-at-step",
           str(KILL_AT), *fsdp, check=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "sharded").iterdir()) == ["step-000000004",
                                                                                         "step-000000008"]
    shutil.copytree(tmp_path / "checkpoints", tmp_path / "checkpoints3")
    launch(2, str(tmp_path / "two"), "--checkpoint", str(tmp_path / "checkpoints"), *fsdp)
    launch(3, str(tmp_path / "three"), "--checkpoint", str(tmp_path / "checkpoints3"), *fsdp)
    single, reference = outcome(tmp_path / "single"), outcome(tmp_path / "reference")
    two, three = outcome(tmp_path / "two"), outcome(tmp_path / "three")
    assert two["resumed_from"] == three["resumed_from"] == "step-000000008"
    assert same_weights(two["weights"], reference["weights"]) and two["history"] == reference["history"]
    assert losses(three["history"]) == pytest.approx(losses(single["history"]), rel=2e-3)
    assert losses(reference["history"]) == pytest.approx(losses(single["history"]), rel=2e-3)
    every_rank_saw_the_same(tmp_path / "three", 3)


def test_every_task_kind_trains_on_two_processes_as_on_one(tmp_path):
    """The task matrix under DDP: binary one-logit, multi-class, regression and token-sequence models, trained on
    2 processes with the same global batch as on 1, follow the same loss curve, and the files the coordinator
    saves load and predict right."""
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"on{processes}"
        out.mkdir()
        launch(processes, str(out), script=ROOT / "tests" / "distributed_tasks_script.py")
        runs[processes] = json.loads((out / "result.json").read_text())
    assert runs[2]["world_size"] == 2 and set(runs[2]["tasks"]) == set(runs[1]["tasks"]) and len(runs[1]["tasks"]) == 4
    for task, two in runs[2]["tasks"].items():
        one = runs[1]["tasks"][task]
        assert two["loss"] == pytest.approx(one["loss"], rel=2e-3, abs=1e-4), task
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=2e-3, abs=1e-4), task
        assert two["score"] >= 0.9, (task, two["score"])

"""fit(..., checkpoint=DIR): a run interrupted anywhere and resumed ends bit-identical to one never stopped."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from modelkeep.checkpoint import CheckpointWarning, LocalStorage, list_checkpoints
from modelkeep.io.atomic import TEMP_MARKER
from modelkeep.data import Standardize
from modelkeep.errors import CheckpointError, TrainingInterrupted
from modelkeep.nn import build
from modelkeep.train import fit
from modelkeep.train.checkpointing import CheckpointSettings

MLP = {"name": "resume_mlp", "layers": [
    {"kind": "Input", "name": "image", "shape": [1, 8, 8]},
    {"kind": "Flatten", "name": "flatten"},
    {"kind": "Dense", "name": "hidden", "units": 64, "activation": "relu"},
    {"kind": "Dropout", "name": "dropout", "rate": 0.2},                  # torch's global RNG
    {"kind": "Dense", "name": "logits", "units": 10},
]}
STEPS = 23  # 1,437 training digits in batches of 64


class Crash(RuntimeError):
    """Stands for the process dying at that point."""


class CrashAt:
    """Raises ``Crash`` after optimizer step ``step`` (before its checkpoint) or in epoch ``epoch``'s end work."""

    def __init__(self, step: int | None = None, epoch: int | None = None) -> None:
        self.step, self.epoch = step, epoch

    def on_step_end(self, state, logs):
        if state.step == self.step:
            raise Crash(f"step {state.step}")

    def on_epoch_end(self, state, logs):
        if state.epoch == self.epoch:
            raise Crash(f"end of epoch {state.epoch}")


def train(splits, checkpoint=None, *, crash=None, epochs=3, learning_rate=2e-3, early_stopping=None,
          schedule=("cosine", 1), **options):
    model = build(MLP, seed=0)
    return fit(model, splits.train, splits.validation, splits.test, epochs=epochs, batch_size=64,
               learning_rate=learning_rate,
               schedule={"type": schedule[0], "warmup_epochs": schedule[1]} if schedule else None,
               early_stopping=early_stopping or {"patience": 5}, preprocessing=Standardize(per_feature=False),
               progress=False, deterministic=True, device="cpu", checkpoint=checkpoint,
               callbacks=[crash or CrashAt()], **options)


def weights(result):
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def no_time(history):
    return [{k: v for k, v in record.items() if k != "time"} for record in history.records]


# Every run here, in this process or a subprocess, computes with one intra-op thread, so all agree.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(digits_splits):
    result = train(digits_splits)
    return weights(result), no_time(result.history)


@pytest.mark.parametrize("crash, every", [
    (CrashAt(step=10), 4),            # inside the first epoch: resumes at step 8, batch 8
    (CrashAt(step=STEPS - 1), 4),     # just before the epoch boundary: resumes at batch 20
    (CrashAt(epoch=1), 1),            # inside the boundary: the last batch is saved, the epoch-end work is not
    (CrashAt(step=STEPS + 2), 1000),  # just after the boundary: resumes from the epoch-end checkpoint
], ids=["mid-epoch", "before-boundary", "inside-boundary", "after-boundary"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_crash_anywhere_then_resume_is_bit_identical(tmp_path, digits_splits, reference, crash, every, asynchronous):
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=every, asynchronous=asynchronous,
                                  durable=False)
    with pytest.raises(Crash):
        train(digits_splits, settings, crash=crash)
    assert list_checkpoints(tmp_path), "the crash came before any checkpoint: the test proves nothing"
    resumed = train(digits_splits, settings)
    assert resumed.resumed_from is not None
    assert same(weights(resumed), reference[0])
    assert no_time(resumed.history) == reference[1]  # the whole history, epochs before the crash included


def test_checkpointing_does_not_change_the_numbers_and_rerun_of_a_finished_run_is_instant(tmp_path, digits_splits,
                                                                                         reference):
    first = train(digits_splits, str(tmp_path))
    assert same(weights(first), reference[0]) and first.resumed_from is None
    again = train(digits_splits, str(tmp_path))
    assert again.resumed_from is not None and same(weights(again), reference[0])
    assert no_time(again.history) == reference[1]


def test_early_stopping_state_and_best_weights_survive_a_resume(tmp_path, digits_splits):
    options = {"epochs": 8, "learning_rate": 0.05, "schedule": None,
               "early_stopping": {"patience": 1, "restore_best_weights": True}}
    plain = train(digits_splits, **options)
    assert plain.stopped_early and plain.best_epoch is not None and plain.best_epoch < len(plain.history)
    crash_epoch = plain.best_epoch + 1  # one validation without improvement already counted
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=5, durable=False)
    with pytest.raises(Crash):
        train(digits_splits, settings, crash=CrashAt(step=crash_epoch * STEPS + 3), **options)
    resumed = train(digits_splits, settings, **options)
    assert (resumed.stopped_early, resumed.best_epoch) == (plain.stopped_early, plain.best_epoch)
    assert len(resumed.history) == len(plain.history)
    assert same(weights(resumed), weights(plain))  # the best weights came back from the checkpoint


def test_corrupt_newest_checkpoint_warns_and_falls_back_to_the_previous_one(tmp_path, digits_splits, reference):
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=4, durable=False)
    with pytest.raises(Crash):
        train(digits_splits, settings, crash=CrashAt(step=30))
    newest = list_checkpoints(tmp_path)[-1].path
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit in a tensor: only the hash can tell
    newest.write_bytes(bytes(data))
    with pytest.warns(CheckpointWarning, match="skipping damaged checkpoint"):
        resumed = train(digits_splits, settings)
    assert resumed.resumed_from != newest.name
    assert same(weights(resumed), reference[0])


def test_truncated_newest_checkpoint_is_skipped_too(tmp_path, digits_splits, reference):
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=4, durable=False)
    with pytest.raises(Crash):
        train(digits_splits, settings, crash=CrashAt(step=30))
    newest = list_checkpoints(tmp_path)[-1].path
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(CheckpointWarning):
        resumed = train(digits_splits, settings)
    assert same(weights(resumed), reference[0])


class FullDisk(LocalStorage):
    """A storage backend whose disk fills up at the ``fail_at``-th write (a half-written temporary file, then ENOSPC)."""

    def __init__(self, directory, fail_at: int) -> None:
        super().__init__(directory)
        self.writes, self.fail_at = 0, fail_at

    def write(self, name, tensors, metadata, *, durable=True):
        self.writes += 1
        if self.writes >= self.fail_at:
            from modelkeep.io.atomic import atomic_write

            with atomic_write(self.directory / name, durable=False) as handle:
                handle.write(b"\0" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(name, tensors, metadata, durable=durable)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_disk_full_stops_training_with_a_clear_error_and_earlier_checkpoints_intact(tmp_path, digits_splits,
                                                                                    asynchronous):
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=4, asynchronous=asynchronous, durable=False)
    manager = settings.manager(storage=FullDisk(tmp_path, fail_at=3))
    with pytest.raises(CheckpointError, match="disk is full") as caught:
        train(digits_splits, manager)
    assert "earlier checkpoints are intact" in str(caught.value)
    infos = list_checkpoints(tmp_path, verify=True)
    assert [info.step for info in infos] == [4, 8] and all(info.verified for info in infos)
    assert not list(tmp_path.glob(f"*{TEMP_MARKER}*"))


def test_disk_full_with_on_error_continue_warns_and_training_finishes_unchanged(tmp_path, digits_splits, reference):
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=4, on_error="continue", durable=False)
    with pytest.warns(CheckpointWarning, match="disk is full"):
        result = train(digits_splits, settings.manager(storage=FullDisk(tmp_path, fail_at=3)))
    assert same(weights(result), reference[0])
    assert [info.step for info in list_checkpoints(tmp_path, verify=True)] == [4, 8]


def test_sigterm_saves_at_the_next_step_and_says_how_to_resume(tmp_path, digits_splits, reference):
    class Terminate:
        def on_step_end(self, state, logs):
            if state.step == 7:
                os.kill(os.getpid(), signal.SIGTERM)

    settings = CheckpointSettings(directory=str(tmp_path), every_steps=1000, durable=False)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as caught:
        train(digits_splits, settings, crash=Terminate())
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back
    stop = caught.value
    assert stop.signal == "SIGTERM" and stop.exit_code == 128 + signal.SIGTERM
    assert stop.checkpoint == "checkpoint-000000007.safetensors" and (tmp_path / stop.checkpoint).is_file()
    assert "resume" in str(stop) and "Resume with: modelkeep train x.yaml" in stop.resume_message("modelkeep train x.yaml")
    assert "at epoch 1, after batch 7 (step 7)" in str(stop)  # counted from 1, as progress counts (was "epoch 0")
    resumed = train(digits_splits, settings, crash=Terminate())  # step 7 is behind it now
    assert resumed.resumed_from == stop.checkpoint
    assert same(weights(resumed), reference[0])


def test_changed_settings_refuse_to_mix_and_resume_false_moves_old_checkpoints_aside(tmp_path, digits_splits,
                                                                                     reference):
    with pytest.raises(Crash):
        train(digits_splits, str(tmp_path), crash=CrashAt(step=30))
    with pytest.raises(CheckpointError, match=r"other settings \(learning_rate: 0.002 -> 0.003\)"):
        train(digits_splits, str(tmp_path), learning_rate=3e-3)
    fresh = train(digits_splits, str(tmp_path), resume=False)
    assert fresh.resumed_from is None and same(weights(fresh), reference[0])
    assert [p.name for p in (tmp_path / "previous").iterdir()]  # the old run's checkpoints, kept once


KILL_IN_SAVE = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_resume_fit import train
    from modelkeep.data import load_dataset, split_dataset
    from modelkeep.checkpoint import LocalStorage
    from modelkeep.train.checkpointing import CheckpointSettings

    class DieInThirdSave(LocalStorage):
        writes = 0
        def write(self, name, tensors, metadata, *, durable=True):
            DieInThirdSave.writes += 1
            if DieInThirdSave.writes == 3:  # half a temporary file written, then the process dies
                from modelkeep.io.atomic import atomic_write
                with atomic_write(self.directory / name, durable=False) as handle:
                    handle.write(b"\\0" * 4096)
                    handle.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().write(name, tensors, metadata, durable=durable)

    settings = CheckpointSettings(directory={directory!r}, every_steps=4, durable=False)
    train(split_dataset(load_dataset("digits"), seed=0), settings.manager(storage=DieInThirdSave({directory!r})))
""")


def test_sigkill_inside_a_save_then_resume_is_bit_identical(tmp_path, digits_splits, reference):
    tests = str(Path(__file__).resolve().parent)  # this folder: the script imports this module
    code = KILL_IN_SAVE.format(tests=tests, directory=str(tmp_path))
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": tests + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert list(tmp_path.glob(f"*{TEMP_MARKER}*")), "the kill did not land inside a save"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)  # a half-written temporary file is no damaged checkpoint
        resumed = train(digits_splits, CheckpointSettings(directory=str(tmp_path), every_steps=4, durable=False))
    assert resumed.resumed_from == "checkpoint-000000008.safetensors"
    assert not list(tmp_path.glob(f"*{TEMP_MARKER}*"))  # the dead writer's leftover was cleaned
    assert same(weights(resumed), reference[0])

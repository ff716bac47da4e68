"""The manager: retention, fallback past damaged checkpoints, failing writes, asynchronous errors."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from modelkeep.checkpoint import (CheckpointManager, CheckpointWarning, EveryNSteps, KeepBestN, KeepLastN,
                                  KeepUnion, LocalStorage, Position, CheckpointState)
from modelkeep.io.atomic import TEMP_MARKER, atomic_write
from modelkeep.io.lock import LOCK_NAME
from modelkeep.errors import CheckpointError


def make_state(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return CheckpointState(model, optimizer)


def train_step(state):
    state.model(torch.randn(16, 8)).pow(2).mean().backward()
    state.optimizer.step()
    state.optimizer.zero_grad()


def save_steps(manager, state, steps, losses=None):
    for i, step in enumerate(steps):
        train_step(state)
        metrics = {"val_loss": losses[i]} if losses else None
        manager.save(state, Position(0, step, step), metrics=metrics)
    manager.wait()


def names(directory):
    """Every file in ``directory`` but the folder's lock file (which is there while a manager holds it)."""
    return sorted(p for p in os.listdir(directory) if p != LOCK_NAME)


class DiskFullStorage(LocalStorage):
    """Writes part of the file, then fails as a full disk would."""

    def __init__(self, directory, fail_from_call=1):
        super().__init__(directory)
        self.calls = 0
        self.fail_from_call = fail_from_call

    def write(self, name, tensors, metadata, *, durable=True):
        self.calls += 1
        if self.calls < self.fail_from_call:
            return super().write(name, tensors, metadata, durable=durable)
        with atomic_write(self.directory / name) as handle:
            handle.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("asynchronous", [False, True])
def test_retention_keeps_last_and_best_and_always_the_newest(tmp_path, asynchronous):
    manager = CheckpointManager(tmp_path, keep=KeepUnion(KeepLastN(1), KeepBestN(1, "val_loss")),
                                asynchronous=asynchronous)
    save_steps(manager, make_state(), [1, 2, 3, 4], losses=[0.5, 0.2, 0.4, 0.9])
    assert [c.step for c in manager.list()] == [2, 4]
    manager = CheckpointManager(tmp_path, keep=KeepBestN(1, "val_loss"), asynchronous=asynchronous)
    save_steps(manager, make_state(), [5], losses=[0.95])
    # step 5 is not the best, but it is the newest verified checkpoint: never deleted
    assert [c.step for c in manager.list()] == [2, 5]
    assert all(c.verified for c in manager.list(verify=True))


def truncate(path, keep_fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep_fraction)])


def flip_byte(path, offset_from_end=10):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_header_byte(path):
    data = bytearray(path.read_bytes())
    data[40] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_byte, flip_header_byte])
def test_restore_falls_back_past_a_damaged_newest_checkpoint(tmp_path, damage):
    state = make_state()
    manager = CheckpointManager(tmp_path, keep=KeepLastN(5), asynchronous=False)
    save_steps(manager, state, [10, 20])
    expected = {k: v.clone() for k, v in state.model.state_dict().items()}
    save_steps(manager, state, [30])
    damage(tmp_path / "checkpoint-000000030.safetensors")

    fresh = make_state(seed=1)
    resumer = CheckpointManager(tmp_path, keep=KeepLastN(1), asynchronous=False)
    with pytest.warns(CheckpointWarning, match="checkpoint-000000030.*falling back"):
        restored = resumer.restore(fresh)
    assert restored.position == Position(0, 20, 20)
    assert all(torch.equal(expected[k], v) for k, v in fresh.model.state_dict().items())
    listed = {c.step: c for c in resumer.list(verify=True)}
    assert listed[30].verified is False and listed[30].error
    # training goes on from step 20: retention keeps the good newest checkpoint, whatever the damaged one says
    save_steps(resumer, fresh, [21])
    steps = [c.step for c in resumer.list() if c.verified is not False]
    assert 21 in steps


def test_all_checkpoints_damaged_is_an_error_not_a_fresh_start(tmp_path):
    manager = CheckpointManager(tmp_path, asynchronous=False)
    save_steps(manager, make_state(), [1])
    truncate(tmp_path / "checkpoint-000000001.safetensors")
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match="no usable checkpoint"):
        CheckpointManager(tmp_path).restore(make_state())
    assert CheckpointManager(tmp_path / "empty").restore(make_state()) is None


def test_a_failing_write_keeps_earlier_checkpoints_and_says_so(tmp_path):
    storage = DiskFullStorage(tmp_path, fail_from_call=2)
    manager = CheckpointManager(tmp_path, storage=storage, asynchronous=False)
    state = make_state()
    save_steps(manager, state, [1])
    before = (tmp_path / "checkpoint-000000001.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match=r"checkpoint-000000002.*No space left on device \(the disk is full\)"
                       r".*earlier checkpoints are intact.*checkpoint-000000001"):
        save_steps(manager, state, [2])
    assert names(tmp_path) == ["checkpoint-000000001.safetensors"]
    assert (tmp_path / "checkpoint-000000001.safetensors").read_bytes() == before


def test_on_error_continue_warns_and_training_goes_on(tmp_path):
    manager = CheckpointManager(tmp_path, storage=DiskFullStorage(tmp_path, fail_from_call=2),
                                asynchronous=False, on_error="continue")
    state = make_state()
    save_steps(manager, state, [1])
    with pytest.warns(CheckpointWarning, match="training continues"):
        assert manager.save(state, Position(0, 2, 2)) is None
    assert len(manager.failures) == 1
    assert names(tmp_path) == ["checkpoint-000000001.safetensors"]


def test_failed_asynchronous_save_is_reported_at_the_next_call(tmp_path):
    manager = CheckpointManager(tmp_path, storage=DiskFullStorage(tmp_path, fail_from_call=2), asynchronous=True)
    state = make_state()
    save_steps(manager, state, [1])
    train_step(state)
    manager.save(state, Position(0, 2, 2))  # returns at once; the write fails in the background
    with pytest.raises(CheckpointError, match="No space left"):
        manager.wait()
    assert names(tmp_path) == ["checkpoint-000000001.safetensors"]
    manager.save(state, Position(0, 3, 3))
    with pytest.raises(CheckpointError):
        manager.should_save(Position(0, 4, 4)) or manager.close()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_unwritable_directory(tmp_path):
    manager = CheckpointManager(tmp_path, asynchronous=False)
    state = make_state()
    save_steps(manager, state, [1])
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match="Permission denied"):
            save_steps(manager, state, [2])
    finally:
        tmp_path.chmod(0o700)
    assert names(tmp_path) == ["checkpoint-000000001.safetensors"]


def test_full_disk_in_a_subprocess_with_rlimit_fsize(tmp_path):
    script = textwrap.dedent(f"""
        import resource, signal, sys, torch
        from modelkeep.checkpoint import CheckpointManager, Position, CheckpointState
        from modelkeep.errors import CheckpointError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # make the kernel fail the write with EFBIG instead
        small = CheckpointState(torch.nn.Linear(4, 4))
        big = CheckpointState(torch.nn.Linear(512, 512))
        manager = CheckpointManager({str(tmp_path)!r}, asynchronous=True)
        manager.save(small, Position(0, 1, 1)); manager.wait()
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        manager.save(big, Position(0, 2, 2))
        try:
            manager.close()
        except CheckpointError as exc:
            print("ERROR", exc); sys.exit(3)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "checkpoint-000000002" in result.stdout and "File too large" in result.stdout
    assert names(tmp_path) == ["checkpoint-000000001.safetensors"]
    assert CheckpointManager(tmp_path).list(verify=True)[0].verified


def test_leftovers_of_a_crashed_writer_are_removed_at_start_up(tmp_path):
    leftover = tmp_path / f".checkpoint-000000005.safetensors{TEMP_MARKER}999999999-dead"
    leftover.write_bytes(b"half a checkpoint")
    manager = CheckpointManager(tmp_path)
    assert manager.cleaned == [leftover.name] and not leftover.exists()


def test_restore_a_chosen_step_and_trigger_state(tmp_path):
    state = make_state()
    manager = CheckpointManager(tmp_path, save_on=EveryNSteps(1), keep=KeepLastN(3), asynchronous=False)
    save_steps(manager, state, [1, 2, 3])
    assert CheckpointManager(tmp_path).restore(make_state(), step=2).position.step == 2
    with pytest.raises(CheckpointError, match="no checkpoint of step 9"):
        CheckpointManager(tmp_path).restore(make_state(), step=9)
    assert manager.latest().step == 3


def test_resume_orders_by_the_recorded_position_not_the_file_name(tmp_path):
    """A step-8 checkpoint copied as checkpoint-999999998 must not send training back in time."""
    from modelkeep.checkpoint import list_checkpoints

    state = make_state()
    manager = CheckpointManager(tmp_path, save_on=EveryNSteps(1), keep=KeepLastN(5), asynchronous=False)
    save_steps(manager, state, [8, 160])
    manager.close()
    shutil.copyfile(tmp_path / "checkpoint-000000008.safetensors", tmp_path / "checkpoint-999999998.safetensors")
    with pytest.warns(CheckpointWarning, match=r"checkpoint-999999998.safetensors records step 8 .* but its name "
                                                r"says step 999999998; it is ordered by the step it records"):
        restored = CheckpointManager(tmp_path).restore(make_state())
    assert restored.position.step == 160 and restored.info.name == "checkpoint-000000160.safetensors"
    with pytest.warns(CheckpointWarning, match="records step 8"):
        listed = list_checkpoints(tmp_path)
    assert [(c.step, c.name) for c in listed] == [(8, "checkpoint-000000008.safetensors"),
                                                  (8, "checkpoint-999999998.safetensors"),
                                                  (160, "checkpoint-000000160.safetensors")]
    assert CheckpointManager(tmp_path).latest().step == 160
    with pytest.warns(CheckpointWarning):
        assert CheckpointManager(tmp_path).restore(make_state(), step=8).position.step == 8


def test_a_second_process_cannot_open_a_manager_on_a_folder_in_use(tmp_path):
    from modelkeep.io.lock import FolderLockedError

    script = textwrap.dedent(f"""
        import sys
        from modelkeep.checkpoint import CheckpointManager
        manager = CheckpointManager({str(tmp_path)!r})
        print("open", flush=True)
        sys.stdin.readline()
        manager.close()
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(FolderLockedError, match=rf"is in use by process {holder.pid} .*\(checkpoint manager\)"):
            CheckpointManager(tmp_path)
    finally:
        holder.communicate("\n", timeout=60)
    CheckpointManager(tmp_path).close()  # free once the first one closed


def test_a_position_edited_in_the_header_is_damage_not_a_newer_checkpoint(tmp_path):
    """The recorded position is trusted only when it matches the file's own hash: step 100 edited to claim 900
    is listed as damaged, and resume takes step 160."""
    state = make_state()
    manager = CheckpointManager(tmp_path, save_on=EveryNSteps(1), keep=KeepLastN(5), asynchronous=False)
    save_steps(manager, state, [100, 160])
    manager.close()
    planted = tmp_path / "checkpoint-000000100.safetensors"
    data = planted.read_bytes()
    recorded = b'\\"step\\":100}'  # the position, JSON inside a JSON string
    assert data.count(recorded) == 1
    planted.write_bytes(data.replace(recorded, recorded.replace(b"100", b"900")))  # same length, hash not updated
    listed = CheckpointManager(tmp_path).list()
    assert [(c.step, c.verified) for c in listed] == [(100, False), (160, None)]
    assert "does not match its recorded hash" in listed[0].error
    assert CheckpointManager(tmp_path).restore(make_state()).position.step == 160

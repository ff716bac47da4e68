"""Folder locks: one process at a time in a run or checkpoint folder; a dead holder's lock is taken over."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelkeep.errors import StorageError
from modelkeep.io.lock import LOCK_NAME, FolderLock, FolderLockedError, StaleLockWarning

ROOT = Path(__file__).resolve().parents[2]


def holder_of(folder: Path) -> dict:
    text = (folder / LOCK_NAME).read_text() if (folder / LOCK_NAME).exists() else ""
    return json.loads(text) if text else {}


def wait_for_holder(folder: Path, pid: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while holder_of(folder).get("pid") != pid:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the first process never took the lock"
        time.sleep(0.05)


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from modelkeep.io.lock import FolderLock
        with FolderLock({str(tmp_path)!r}, purpose="test holder"):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError) as refused:
            FolderLock(tmp_path).acquire()
        message = str(refused.value)
        assert f"process {holder.pid} on host {socket.gethostname()}" in message and "test holder" in message
        assert str(tmp_path) in message and "choose another folder" in message
    finally:
        holder.communicate("\n", timeout=30)
    assert holder_of(tmp_path) == {}  # released: the file is emptied, never deleted
    with FolderLock(tmp_path):  # free again
        assert holder_of(tmp_path)["pid"] == os.getpid()


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(),
                                                  "started": "2026-01-01T00:00:00+00:00", "purpose": "training run"}))
    with pytest.warns(StaleLockWarning, match=rf"left by process {dead_pid} .*no longer running"):
        lock = FolderLock(tmp_path).acquire()
    try:
        assert holder_of(tmp_path)["pid"] == os.getpid()
    finally:
        lock.release()


def test_one_process_may_lock_a_folder_twice_and_release_is_counted(tmp_path):
    first = FolderLock(tmp_path).acquire()
    second = FolderLock(tmp_path).acquire()  # the same process: shared, not refused
    first.release()
    assert holder_of(tmp_path)["pid"] == os.getpid()  # still held by the second
    second.release()
    second.release()  # harmless
    assert holder_of(tmp_path) == {}


def test_a_file_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(StorageError, match="a file of that name is in the way"):
        FolderLock(tmp_path / "run").acquire()


def test_two_trainings_on_one_run_folder_the_second_is_refused(tmp_path):
    """Two real ``modelkeep train`` processes on one --run-dir: the second exits 2 naming the first."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "modelkeep", "train", str(ROOT / "examples" / "digits_mlp.yaml"),
               "--run-dir", str(run_dir), "--quiet", "--set", "epochs=500", "--set", "early_stopping=null"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for_holder(run_dir, first.pid, first)
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert f"is in use by process {first.pid} on host {socket.gethostname()}" in lines[0], lines
        assert first.poll() is None  # the first run goes on untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # The killed run left its lock file naming it; the next command takes the folder over, saying so.
    assert holder_of(run_dir)["pid"] == first.pid
    third = subprocess.run([*command[:-4], "--set", "epochs=1", "--restart"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert third.returncode == 0, third.stderr
    assert f"took over the lock of {run_dir} left by process {first.pid}" in third.stderr
    assert (run_dir / "model.safetensors").exists() and holder_of(run_dir) == {}

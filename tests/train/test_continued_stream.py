"""update_stream: a saved model trained on a stream of batches, checkpointed, resumed exactly after a kill."""
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

from modelkeep import fit, load, save
from modelkeep.checkpoint import list_checkpoints
from modelkeep.data import Standardize
from modelkeep.errors import CheckpointError, ConfigError
from modelkeep.nn import build
from modelkeep.spec import load_spec
from modelkeep.train.continued import CONTINUED
from modelkeep.train.incremental import FolderStream, update_stream

from task_specs import multiclass_data

TESTS = Path(__file__).resolve().parents[1]
SCRIPT = TESTS / "continued_stream_script.py"
# Dropout: a resume that lost torch's RNG state would not end bit-identical.
SPEC = {"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 16, "activation": "relu"},
                   {"kind": "Dropout", "rate": 0.2}, {"kind": "Dense", "name": "head", "units": 3}]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def parent(tmp_path):
    train = multiclass_data(np.random.default_rng(0), 200)
    result = fit(build(load_spec(SPEC), seed=0), train, epochs=2, learning_rate=0.01, progress=False,
                 preprocessing=Standardize())
    return save(result, tmp_path / "parent.safetensors", optimizer=result.optimizer)


def stream(count, start=0):
    for index in range(start, count):
        yield multiclass_data(np.random.default_rng(1000 + index), 32)


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


class Crash(RuntimeError):
    pass


def test_a_crashed_update_resumes_bit_identical_and_records_the_stream(parent, tmp_path):
    reference = update_stream(parent, stream(9), every=2, learning_rate=0.01)

    def crash(done, loss):
        if done == 7:
            raise Crash

    with pytest.raises(Crash):
        update_stream(parent, stream(9), checkpoint=tmp_path / "ck", every=2, learning_rate=0.01, on_batch=crash)
    assert [c.step for c in list_checkpoints(tmp_path / "ck")][-1] == 6  # nothing saved after the error
    resumed = update_stream(parent, stream(9), checkpoint=tmp_path / "ck", every=2, learning_rate=0.01)
    assert same(weights(resumed.model), weights(reference.model))
    assert resumed.history.records == reference.history.records
    assert resumed.data_fingerprint == reference.data_fingerprint
    assert resumed.lineage["relation"] == CONTINUED and resumed.lineage["mode"] == "stream"
    assert resumed.lineage["batches"] == 9 and resumed.stopped_by == "end of stream"
    assert resumed.hyperparameters["optimizer_state"] == "continued from the parent"


def test_max_batches_counts_across_resumes_and_a_later_call_takes_what_arrived(parent, tmp_path):
    first = update_stream(parent, stream(10), checkpoint=tmp_path / "ck", every=3, max_batches=4,
                          learning_rate=0.01)
    assert first.lineage["batches"] == 4 and first.stopped_by == "max_batches"
    later = update_stream(parent, stream(10), checkpoint=tmp_path / "ck", every=3, learning_rate=0.01)
    whole = update_stream(parent, stream(10), every=3, learning_rate=0.01)
    assert later.lineage["batches"] == 10
    assert same(weights(later.model), weights(whole.model))
    with pytest.raises(CheckpointError, match="another update"):
        update_stream(parent, stream(12), checkpoint=tmp_path / "ck", every=3, learning_rate=0.5)


def _write(folder, name, index, rows=40):
    x, y = multiclass_data(np.random.default_rng(2000 + index), rows)
    np.savez(folder / name, x=x, y=y)


def test_a_folder_is_consumed_in_name_order_and_resumed_by_file(parent, tmp_path):
    incoming, everything = tmp_path / "incoming", tmp_path / "everything"
    incoming.mkdir(), everything.mkdir()
    for index in range(5):
        _write(everything, f"part-{index:03d}.npz", index)
    for index in range(3):
        _write(incoming, f"part-{index:03d}.npz", index)
    (incoming / "part-009.npz.part").write_bytes(b"half a file")  # being written: never read
    whole = update_stream(parent, FolderStream(everything, batch_size=16), every=2, learning_rate=0.01)
    assert whole.lineage["batches"] == 15  # 5 files of 40 rows in batches of 16: 3 each
    folder = FolderStream(incoming, batch_size=16)
    first = update_stream(parent, folder, checkpoint=tmp_path / "ck", every=2, learning_rate=0.01)
    assert folder.done == ["part-000.npz", "part-001.npz", "part-002.npz"] and first.lineage["batches"] == 9
    for index in (3, 4):
        _write(incoming, f"part-{index:03d}.npz", index)
    second = update_stream(parent, FolderStream(incoming, batch_size=16), checkpoint=tmp_path / "ck", every=2,
                           learning_rate=0.01)
    assert second.lineage["batches"] == 15
    assert same(weights(second.model), weights(whole.model))


def test_a_folder_waits_until_idle_then_stops(parent, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder, "a.npz", 0)
    started = time.monotonic()
    result = update_stream(parent, FolderStream(folder, poll=0.05, until_idle=0.3), learning_rate=0.01)
    assert 0.3 <= time.monotonic() - started < 20 and result.lineage["batches"] == 1
    with pytest.raises(ConfigError, match="not a folder"):
        FolderStream(tmp_path / "missing")


def test_an_update_killed_mid_stream_resumes_bit_identical(parent, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = lambda *extra, out: subprocess.run(  # noqa: E731
        [sys.executable, str(SCRIPT), str(parent), *extra, str(out), "--batches", "12", "--every", "2"],
        capture_output=True, text=True, timeout=300, env=env)
    uninterrupted = update_stream(parent, stream(12), every=2, learning_rate=0.01)  # as the script's, in here
    save(uninterrupted, tmp_path / "reference.safetensors", optimizer=uninterrupted.optimizer, reproducible=True)
    checkpoints = tmp_path / "ck"
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(parent), str(checkpoints),
                                str(tmp_path / "killed.safetensors"), "--batches", "12", "--every", "2",
                                "--sleep", "0.25"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once a checkpoint at step 4 or later is committed
            steps = [c.step for c in list_checkpoints(checkpoints)] if checkpoints.exists() else []
            if steps and max(steps) >= 4:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.safetensors").exists()  # it died mid-stream
    assert max(c.step for c in list_checkpoints(checkpoints)) < 12
    resumed = run(str(checkpoints), out=tmp_path / "resumed.safetensors")
    assert resumed.returncode == 0, resumed.stderr
    reference, again = load(tmp_path / "reference.safetensors"), load(tmp_path / "resumed.safetensors")
    assert same(weights(again.module), weights(reference.module))
    assert again.history.records == reference.history.records
    assert again.lineage == {**reference.lineage}
    assert again.content_hash == reference.content_hash


def test_sigterm_ends_an_update_cleanly_and_the_same_call_goes_on(parent, tmp_path):
    def terminate_at_three(done, loss):
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # SignalGuard turns it into a request, seen after the step

    stopped = update_stream(parent, stream(8), checkpoint=tmp_path / "ck", every=5, learning_rate=0.01,
                            on_batch=terminate_at_three)
    assert stopped.stopped_by == "SIGTERM" and stopped.lineage["batches"] == 3
    assert max(c.step for c in list_checkpoints(tmp_path / "ck")) == 3  # the stop itself was saved
    rest = update_stream(parent, stream(8), checkpoint=tmp_path / "ck", every=5, learning_rate=0.01)
    whole = update_stream(parent, stream(8), every=5, learning_rate=0.01)
    assert rest.lineage["batches"] == 8 and same(weights(rest.model), weights(whole.model))

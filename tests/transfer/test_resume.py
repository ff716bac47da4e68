"""Checkpoints and exact resume with every fine-tuning pattern: a run interrupted mid-way and resumed ends with the
weights — parameters and BatchNorm statistics — of the uninterrupted run, bit for bit; a resume with other transfer
settings is refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from modelkeep import CheckpointError
from modelkeep.checkpoint import list_checkpoints
from modelkeep.train import CheckpointSettings
from modelkeep.transfer import finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PATTERNS = {
    "feature_extraction": dict(head=3, freeze="all_but_head"),
    "gradual": dict(head=3, unfreeze_every=1),
    "probe_then_fine_tune": dict(head=3, probe_epochs=1),
    "discriminative": dict(head=3, discriminative=0.5),
    "l2sp": dict(head=3, l2sp={"alpha": 0.5, "beta": 0.01}),
    "batchnorm_frozen": dict(batchnorm="frozen"),
    "batchnorm_reestimate": dict(head=3, batchnorm="reestimate", unfreeze_every=1, l2sp=0.1),
}
# 120 training samples in batches of 16: 8 steps an epoch, 24 in all
RUN = dict(epochs=3, batch_size=16, learning_rate=0.02, deterministic=True, schedule="cosine", progress=False)


class Crash(RuntimeError):
    pass


class CrashAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state, logs):
        if state.step == self.step:
            raise Crash(f"killed at step {self.step}")


def _settings(folder):
    return CheckpointSettings(directory=str(folder), every_steps=4, asynchronous=False, durable=False)


def _run(base_file, iris, pattern, checkpoint=None, callbacks=()):
    return finetune(base_file, iris.train, iris.validation, checkpoint=checkpoint, callbacks=list(callbacks),
                    **PATTERNS[pattern], **RUN)


def _assert_identical(expected, actual):
    expected, actual = expected.state_dict(), actual.state_dict()
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        assert torch.equal(value, actual[name]), name


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_a_crash_mid_epoch_then_resume_is_bit_identical(pattern, iris, base_file, tmp_path):
    reference = _run(base_file, iris, pattern)
    with pytest.raises(Crash):
        _run(base_file, iris, pattern, _settings(tmp_path), [CrashAt(14)])
    assert list_checkpoints(tmp_path)[-1].step == 12  # epoch 2, batch 4: after the first unfreezing
    resumed = _run(base_file, iris, pattern, _settings(tmp_path))
    assert resumed.resumed_from is not None
    _assert_identical(reference.model, resumed.model)
    assert len(resumed.optimizer.param_groups) == len(reference.optimizer.param_groups)
    assert resumed.history["loss"] == reference.history["loss"]
    assert resumed.lineage == reference.lineage


@pytest.mark.slow
@pytest.mark.parametrize("crash", [5, 9, 17, 23])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_a_crash_anywhere_then_resume_is_bit_identical(pattern, crash, iris, base_file, tmp_path):
    reference = _run(base_file, iris, pattern)
    with pytest.raises(Crash):
        _run(base_file, iris, pattern, _settings(tmp_path), [CrashAt(crash)])
    _assert_identical(reference.model, _run(base_file, iris, pattern, _settings(tmp_path)).model)


def test_a_resume_with_other_transfer_settings_is_refused(iris, base_file, tmp_path):
    with pytest.raises(Crash):
        _run(base_file, iris, "gradual", _settings(tmp_path), [CrashAt(10)])
    with pytest.raises(CheckpointError, match="other transfer settings .*unfreeze_every"):
        finetune(base_file, iris.train, iris.validation, checkpoint=_settings(tmp_path), head=3, unfreeze_every=2,
                 **RUN)


SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from modelkeep.data import load_dataset, split_dataset
    from modelkeep.train import CheckpointSettings
    from modelkeep.transfer import finetune
    from modelkeep.artifact import save

    base, folder, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    iris = split_dataset(load_dataset("iris"), seed=0)

    class Kill:
        def on_step_end(self, state, logs):
            if state.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    result = finetune(base, iris.train, iris.validation, head=3, unfreeze_every=1, l2sp=0.1, batchnorm="reestimate",
                      discriminative=0.5, epochs=3, batch_size=16, learning_rate=0.02, deterministic=True,
                      progress=False, callbacks=[Kill()],
                      checkpoint=CheckpointSettings(directory=folder, every_steps=3, asynchronous=True))
    save(result, out)
""")


def test_sigkill_then_the_same_command_resumes_bit_identical(iris, base_file, tmp_path):
    def command(kill_at, out):
        return [sys.executable, "-c", SCRIPT, str(base_file), str(tmp_path / "run"), str(out), str(kill_at)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(command(11, tmp_path / "never.safetensors"), capture_output=True, text=True, env=env,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list_checkpoints(tmp_path / "run")
    done = subprocess.run(command(-1, tmp_path / "resumed.safetensors"), capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    from modelkeep.artifact import load

    uninterrupted = finetune(base_file, iris.train, iris.validation, head=3, unfreeze_every=1, l2sp=0.1,
                             batchnorm="reestimate", discriminative=0.5, epochs=3, batch_size=16, learning_rate=0.02,
                             deterministic=True, progress=False)
    resumed = load(tmp_path / "resumed.safetensors")
    _assert_identical(uninterrupted.model, resumed.module)
    assert resumed.lineage == uninterrupted.lineage

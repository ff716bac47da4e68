"""The deferred snapshot: an asynchronous save copies weights and optimizer state on its background thread.

Each test makes that background copy slow (a sleep before ``SnapshotBuffers.fill``), so the
training thread races ahead of it: the checkpoint must still hold the state at the moment
``save`` was called — the weights before the next optimizer step (fenced) and the BatchNorm
statistics before the next forward pass (copied synchronously).
"""
from __future__ import annotations

import time

import pytest
import torch

from modelkeep.checkpoint import CheckpointManager, KeepLastN, Position, CheckpointState
from modelkeep.checkpoint.reading import read_checkpoint
from modelkeep.checkpoint.snapshot import SnapshotBuffers

DELAY = 0.3


class SlowCopy:
    def __init__(self) -> None:
        self.delay = DELAY
        self.calls: list[int] = []  # tensors copied by each deferred copy, appended once it is done


@pytest.fixture
def slow_copy(monkeypatch):
    """Delay the deferred copy of every save by ``slow_copy.delay`` seconds."""
    original = SnapshotBuffers.fill
    slow = SlowCopy()

    def fill(pending):
        time.sleep(slow.delay)
        original(pending)
        slow.calls.append(len(pending))

    monkeypatch.setattr(SnapshotBuffers, "fill", staticmethod(fill))
    return slow


def make_state(batch_norm=False):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 16)]
    if batch_norm:
        layers.append(torch.nn.BatchNorm1d(16))
    layers += [torch.nn.ReLU(), torch.nn.Linear(16, 4)]
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-1)
    state = CheckpointState(model, optimizer)
    forward_backward(state)
    optimizer.step()  # the Adam moments exist
    return state


def forward_backward(state):
    state.optimizer.zero_grad(set_to_none=True)
    state.model.train()
    state.model(torch.randn(32, 8)).pow(2).mean().backward()


def snapshot(state):
    """The model's state dict and the optimizer state tensors, cloned."""
    weights = {k: v.clone() for k, v in state.model.state_dict().items()}
    moments = [{k: v.clone() for k, v in per.items()} for per in state.optimizer.state_dict()["state"].values()]
    return weights, moments


def restored(directory, batch_norm=False):
    fresh = make_state(batch_norm)
    info = CheckpointManager(directory, asynchronous=False).restore(fresh)
    assert info is not None
    return snapshot(fresh)


def same(a, b):
    weights_a, moments_a = a
    weights_b, moments_b = b
    return (set(weights_a) == set(weights_b) and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
            and len(moments_a) == len(moments_b)
            and all(set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(moments_a, moments_b)))


@pytest.mark.parametrize("explicit_fence", [True, False], ids=["fence", "step-hook"])
def test_a_step_right_after_an_async_save_does_not_reach_the_checkpoint(tmp_path, slow_copy, explicit_fence):
    state = make_state()
    manager = CheckpointManager(tmp_path, keep=KeepLastN(5), asynchronous=True)
    assert manager.defer_copy
    at_save = snapshot(state)
    manager.save(state, Position(0, 1, 1))
    forward_backward(state)
    if explicit_fence:
        manager.fence()
    state.optimizer.step()  # without the fence (explicit or the step pre-hook) this would race the copy
    assert manager.last_fence_wait_s > DELAY / 3, "the race was not forced: the copy had finished already"
    assert not same(snapshot(state), at_save)
    manager.close()
    assert slow_copy.calls and slow_copy.calls[0] > 0
    assert same(restored(tmp_path), at_save)


def test_batch_norm_statistics_are_those_at_save_time(tmp_path, slow_copy):
    state = make_state(batch_norm=True)
    manager = CheckpointManager(tmp_path, keep=KeepLastN(5), asynchronous=True)
    at_save = snapshot(state)
    manager.save(state, Position(0, 1, 1))
    forward_backward(state)  # changes running_mean/running_var/num_batches_tracked while the copy sleeps
    bn = state.model[1]
    assert not torch.equal(bn.running_mean, at_save[0]["1.running_mean"])
    assert slow_copy.calls == [], "the background copy had already finished: the race was not forced"
    manager.fence()
    state.optimizer.step()
    manager.close()
    assert same(restored(tmp_path, batch_norm=True), at_save)
    _, tensors, _ = read_checkpoint(manager.list()[-1].path)
    assert torch.equal(tensors["model/1.running_mean"], at_save[0]["1.running_mean"])
    assert torch.equal(tensors["model/1.num_batches_tracked"], at_save[0]["1.num_batches_tracked"])


def test_only_parameters_and_optimizer_state_are_deferred(tmp_path):
    state = make_state(batch_norm=True)
    manager = CheckpointManager(tmp_path, asynchronous=True)
    manager.save(state, Position(0, 1, 1))
    deferred = {id(buffer) for buffer, _ in manager._buffers.pending}
    copies = manager._buffers._buffers
    names = {name for name, buffer in copies.items() if id(buffer) in deferred}
    manager.close()
    parameters = {"model/" + name for name, _ in state.model.named_parameters()}
    assert parameters <= names
    assert not any(name.startswith(("model/1.running", "model/1.num_batches", "rng/")) for name in names)
    assert any(name.startswith("optimizer/state/") and name.endswith("exp_avg") for name in names)
    assert all(name in parameters or name.startswith("optimizer/state/") for name in names)


@pytest.mark.parametrize("options", [{"asynchronous": False}, {"asynchronous": True, "defer_copy": False}])
def test_without_deferral_everything_is_copied_in_save(tmp_path, slow_copy, options):
    state = make_state(batch_norm=True)
    manager = CheckpointManager(tmp_path, keep=KeepLastN(5), **options)
    assert not manager.defer_copy
    at_save = snapshot(state)
    manager.save(state, Position(0, 1, 1))
    manager.fence()  # nothing pending: returns at once
    assert manager.last_fence_wait_s == 0.0
    forward_backward(state)
    state.optimizer.step()
    manager.close()
    assert slow_copy.calls == []
    assert same(restored(tmp_path, batch_norm=True), at_save)


def test_fit_checkpoints_hold_the_weights_of_their_step(tmp_path, digits_splits, slow_copy):
    """Through fit's loop (fence in optimizer_step and before callbacks), every checkpoint is its step's state."""
    from modelkeep.data import Standardize
    from modelkeep.train import fit
    from modelkeep.train.checkpointing import CheckpointSettings

    slow_copy.delay = 0.05

    class Record:
        def __init__(self):
            self.weights = {}

        def on_step_end(self, state, logs):
            self.weights[state.step] = {k: v.clone() for k, v in state.model.state_dict().items()}

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 10))
    record = Record()
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=3, every_epochs=None, keep_last=100,
                                  keep_best=0, monitor=None, asynchronous=True, durable=False)
    fit(model, digits_splits.train, digits_splits.validation, epochs=1, batch_size=256, progress=False,
        preprocessing=Standardize(per_feature=False), device="cpu", checkpoint=settings, callbacks=[record])
    infos = CheckpointManager(tmp_path, asynchronous=False).list()
    assert len(infos) >= 2 and slow_copy.calls
    for info in infos:
        _, tensors, _ = read_checkpoint(info.path)
        expected = record.weights[info.step]
        for name, value in expected.items():
            assert torch.equal(tensors["model/" + name], value), (info.name, name)

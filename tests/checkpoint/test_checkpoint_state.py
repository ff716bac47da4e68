"""Capture and restore of the training state: exact round trips, never a pickle."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from modelkeep.checkpoint import CheckpointState, capture_rng, restore_rng
from modelkeep.checkpoint.state import capture, decode_tree, encode_tree, restore
from modelkeep.errors import CheckpointError


def draws(numpy_gen, torch_gen):
    return (
        [random.random() for _ in range(5)],
        np.random.rand(5).tolist() + [np.random.normal()],
        numpy_gen.random(5).tolist(),
        torch.rand(5).tolist(),
        torch.randperm(20, generator=torch_gen).tolist(),
    )


def test_rng_round_trip_gives_identical_streams():
    random.seed(1)
    np.random.seed(2)
    np.random.normal()  # leaves a cached gaussian in the legacy state: it must survive too
    torch.manual_seed(3)
    numpy_gen = np.random.default_rng(4)
    torch_gen = torch.Generator().manual_seed(5)
    generators = {"augment": numpy_gen, "data_order": torch_gen}
    tensors: dict = {}
    tree = encode_tree(capture_rng(generators), "rng/", tensors)
    first = draws(numpy_gen, torch_gen)
    # scramble everything, then restore
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    numpy_gen.random(100), torch.randperm(100, generator=torch_gen)
    restore_rng(decode_tree(tree, tensors), generators)
    assert draws(numpy_gen, torch_gen) == first


def test_tree_round_trip_keeps_types():
    value = {
        "floats": [1.5, math.inf, -math.inf, 0.1 + 0.2],
        "tuple": (1, (2, "x"), None),
        3: {"int keys": True},
        "tensor": torch.arange(6, dtype=torch.int16).reshape(2, 3),
        "array": np.arange(4, dtype=np.uint32),
        "numpy scalar": np.float32(0.25),
        "__reserved": 1,
    }
    tensors: dict = {}
    tree = encode_tree(value, "x/", tensors)
    back = decode_tree(tree, tensors)
    assert back["floats"][:3] == [1.5, math.inf, -math.inf] and back["floats"][3] == 0.1 + 0.2
    assert back["tuple"] == (1, (2, "x"), None)
    assert back[3] == {"int keys": True} and back["__reserved"] == 1
    assert torch.equal(back["tensor"], value["tensor"])
    assert isinstance(back["array"], np.ndarray) and back["array"].dtype == np.uint32
    assert back["numpy scalar"] == 0.25
    assert math.isnan(decode_tree(encode_tree(math.nan, "n/", {}), {}))


def test_objects_that_would_need_a_pickle_are_refused():
    with pytest.raises(CheckpointError, match="never pickles"):
        encode_tree({"fn": len}, "callbacks/bad/", {})


def test_capture_restore_model_optimizer_scheduler_callbacks():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    for _ in range(3):
        model(torch.randn(8, 4)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()

    class Counter:
        def __init__(self):
            self.count, self.best = 0, math.inf

        def state_dict(self):
            return {"count": self.count, "best": self.best}

        def load_state_dict(self, state):
            self.count, self.best = state["count"], state["best"]

    counter = Counter()
    counter.count = 7
    tensors, tree = capture(CheckpointState(model, optimizer, scheduler, callbacks={"counter": counter}))
    tensors = {k: v.clone() for k, v in tensors.items()}
    fresh = torch.nn.Linear(4, 3)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1.0)
    fresh_sched = torch.optim.lr_scheduler.CosineAnnealingLR(fresh_opt, T_max=10)
    fresh_counter = Counter()
    restore(CheckpointState(fresh, fresh_opt, fresh_sched, callbacks={"counter": fresh_counter}), tensors, tree)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert fresh_opt.param_groups[0]["betas"] == (0.8, 0.95)
    assert fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for a, b in zip(optimizer.state.values(), fresh_opt.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert fresh_sched.state_dict() == scheduler.state_dict()
    assert (fresh_counter.count, fresh_counter.best) == (7, math.inf)
    with pytest.raises(CheckpointError, match="fit this model"):
        restore(CheckpointState(torch.nn.Linear(5, 3)), tensors, tree)

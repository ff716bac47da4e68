"""Helpers of the transfer tests (a module of its own: pytest imports test folders' modules by plain name)."""
from __future__ import annotations

import torch

BASE_SPEC = {"name": "iris_bn_mlp", "layers": [
    {"kind": "Input", "shape": [4]},
    {"kind": "Dense", "name": "hidden", "units": 16, "activation": "relu"},
    {"kind": "BatchNorm1D", "name": "bn"},
    {"kind": "Dense", "name": "mid", "units": 8, "activation": "relu"},
    {"kind": "Dense", "name": "out", "units": 3},
]}

QUICK = dict(epochs=2, batch_size=16, progress=False)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, copied."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def assert_same(before: dict[str, torch.Tensor], model: torch.nn.Module, names=None) -> None:
    now = model.state_dict()
    for name in names if names is not None else before:
        assert torch.equal(before[name], now[name]), name


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    now = model.state_dict()
    return {name for name in before if name in now and before[name].shape == now[name].shape
            and not torch.equal(before[name], now[name])}

"""Activation functions by name, as ``torch.nn`` modules."""
from __future__ import annotations

from typing import Any

import torch.nn as nn

_FACTORIES = {
    "relu": nn.ReLU,
    "leaky_relu": lambda alpha=0.01: nn.LeakyReLU(alpha),
    "elu": lambda alpha=1.0: nn.ELU(alpha),
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=-1),
    "silu": nn.SiLU,
    "linear": nn.Identity,
}


def make(name: str, **args: Any) -> nn.Module:
    """A fresh module for the activation ``name`` (a canonical name from ``ACTIVATIONS``)."""
    return _FACTORIES[name](**args)

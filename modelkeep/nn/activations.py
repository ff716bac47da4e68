"""Activation functions by name, as ``torch.nn`` modules.

The names and their aliases are data and live in ``modelkeep.spec.kinds.ACTIVATIONS``;
this module only turns a name into a module.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..spec.kinds import ACTIVATIONS

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
    "relu6": nn.ReLU6,
    "hard_sigmoid": nn.Hardsigmoid,   # relu6(x + 3) / 6, as Keras 3 and torchvision
    "hard_silu": nn.Hardswish,
    "softplus": nn.Softplus,
    "softsign": nn.Softsign,
    "mish": nn.Mish,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}


def make(name: str, **args: Any) -> nn.Module:
    """A fresh module for the activation ``name`` (a canonical name from ``ACTIVATIONS``)."""
    return _FACTORIES[name](**args)


def activation_module(function: str, **args: Any) -> nn.Module:
    """A fresh module for ``function``, any name or alias ``ACTIVATIONS`` knows (``"swish"`` is SiLU)."""
    return make(ACTIVATIONS.canonical(function), **args)


def with_activation(module: nn.Module, activation: str | None) -> nn.Module:
    """``module`` followed by ``activation``, as one module (``Sequential`` keys ``0`` and ``1``)."""
    if activation is None or ACTIVATIONS.canonical(activation) == "linear":
        return module
    return nn.Sequential(module, activation_module(activation))

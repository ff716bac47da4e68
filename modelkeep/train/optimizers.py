"""Optimizers by name, all from ``torch.optim``."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from .._registry import Registry
from ..errors import ConfigError

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", ConfigError)
OPTIMIZERS.register("sgd", torch.optim.SGD)
OPTIMIZERS.register("adam", torch.optim.Adam)


def make_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], learning_rate: float, **options: Any):
    factory = OPTIMIZERS.get(name)
    try:
        return factory([p for p in parameters if p.requires_grad], lr=learning_rate, **options)
    except TypeError as exc:
        raise ConfigError(f"optimizer {name!r} does not accept options {sorted(options)}: {exc}") from None

"""Optimizers by name, all from ``torch.optim``: SGD (plain, momentum, Nesterov), Adam, AdamW, RMSProp."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable

import torch

from .._registry import Registry
from ..errors import ConfigError

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", ConfigError)
OPTIMIZERS.register("sgd", torch.optim.SGD)
OPTIMIZERS.register("momentum", partial(torch.optim.SGD, momentum=0.9), aliases=("sgd_momentum",))
OPTIMIZERS.register("nesterov", partial(torch.optim.SGD, momentum=0.9, nesterov=True), aliases=("sgd_nesterov",))
OPTIMIZERS.register("adam", torch.optim.Adam)
OPTIMIZERS.register("adamw", torch.optim.AdamW)
OPTIMIZERS.register("rmsprop", torch.optim.RMSprop)


def make_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], learning_rate: float, **options: Any):
    """``torch.optim`` optimizer by name over the trainable parameters; ``options`` go to its constructor
    (``weight_decay``, ``momentum``, ``nesterov``, ``betas``, ...)."""
    factory = OPTIMIZERS.get(name)
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ConfigError(f"learning_rate must be a positive number, got {learning_rate!r}")
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters (all are frozen)")
    try:
        return factory(params, lr=learning_rate, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer {name!r} does not accept options {options}: {exc}") from None

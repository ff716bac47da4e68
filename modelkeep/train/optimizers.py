"""Optimizers by name, all from ``torch.optim``: SGD (plain, momentum, Nesterov), Adam, AdamW, RMSProp.

``make_optimizer`` takes the parameters either as one flat iterable (one group at one learning
rate) or as ``torch.optim`` parameter-group dicts, such as ``ParameterGroups.param_groups()`` builds
from group rules. Frozen parameters (``requires_grad=False``) are left out of the optimizer in both
cases; ``ParameterGroups`` remembers them so that ``ParameterGroups.add_to`` can add them later.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable, Mapping

import torch

from .._overrides import shorten_value
from .._registry import Registry
from ..errors import ConfigError

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", ConfigError)
OPTIMIZERS.register("sgd", torch.optim.SGD)
OPTIMIZERS.register("momentum", partial(torch.optim.SGD, momentum=0.9), aliases=("sgd_momentum",))
OPTIMIZERS.register("nesterov", partial(torch.optim.SGD, momentum=0.9, nesterov=True), aliases=("sgd_nesterov",))
OPTIMIZERS.register("adam", torch.optim.Adam)
OPTIMIZERS.register("adamw", torch.optim.AdamW)
OPTIMIZERS.register("rmsprop", torch.optim.RMSprop)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _trainable_groups(groups: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The group dicts with their frozen parameters left out (a group left empty stays, keeping the indices)."""
    out, seen = [], set()
    for index, group in enumerate(groups):
        if "params" not in group:
            raise ConfigError(f"parameter group {index} has no 'params' entry; each group is a dict like "
                              "{'params': [...], 'lr': 0.01}")
        if "lr" in group and not _positive(group["lr"]):
            raise ConfigError(f"parameter group {index} has learning rate {group['lr']!r}; "
                              "it must be a positive number")
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        repeated = [p for p in params if id(p) in seen]
        if repeated:
            raise ConfigError(f"parameter group {index} repeats a parameter (shape {tuple(repeated[0].shape)}) of an "
                              "earlier group; each parameter belongs to one group")
        seen.update(id(p) for p in params)
        out.append({**group, "params": [p for p in params if p.requires_grad]})
    return out


def make_optimizer(name: str, parameters: Iterable[torch.nn.Parameter] | Iterable[Mapping[str, Any]],
                   learning_rate: float, **options: Any) -> torch.optim.Optimizer:
    """``torch.optim`` optimizer by name over the trainable parameters; ``options`` go to its constructor
    (``weight_decay``, ``momentum``, ``nesterov``, ``betas``, ...).

    ``parameters`` is a flat iterable of parameters, or a list of parameter-group dicts
    (``{"params": [...], "lr": ..., "weight_decay": ...}``) whose missing entries default to
    ``learning_rate`` and ``options``. Frozen parameters are left out; at least one must train.
    """
    factory = OPTIMIZERS.get(name)
    if not _positive(learning_rate):
        raise ConfigError(f"learning_rate must be a positive number, got {learning_rate!r}")
    items = list(parameters)
    if items and all(isinstance(item, Mapping) for item in items):
        params: list[Any] = _trainable_groups(items)
        trainable = sum(len(group["params"]) for group in params)
    elif any(isinstance(item, Mapping) for item in items):
        raise ConfigError("make_optimizer takes either parameters or parameter-group dicts, not a mix of both")
    else:
        params = [p for p in items if p.requires_grad]
        trainable = len(params)
    if not trainable:
        raise ConfigError("the model has no trainable parameters (all are frozen)")
    try:
        return factory(params, lr=learning_rate, **options)
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"optimizer {name!r} refuses the options {shorten_value(dict(options), 120)}: {exc or type(exc).__name__}"
                          f" (see torch.optim.{_class_name(factory, name)} for what each option takes, e.g. "
                          "betas: [0.9, 0.999])") from None


def _class_name(factory: Any, name: str) -> str:
    return getattr(factory, "__name__", None) or getattr(getattr(factory, "func", None), "__name__", name)


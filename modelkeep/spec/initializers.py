"""Weight initialisers by name, as data: which exist and which arguments each takes.

A spec names an initialiser as a string (``"he_normal"``) or as an object with
its arguments (``{"name": "normal", "mean": 0.0, "std": 0.02}``). This module
only validates those; ``modelkeep.nn.init`` applies them with ``torch.nn.init``.
It never imports torch.
"""
from __future__ import annotations

from typing import Any, Union

from .._registry import Registry
from ..errors import SpecError

InitializerSpec = Union[str, dict[str, Any]]

# canonical name -> default arguments (a value of ... means "required")
INITIALIZERS: Registry[dict[str, Any]] = Registry("initializer", SpecError)
_TABLE: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    ("zeros", (), {}),
    ("ones", (), {}),
    ("constant", (), {"value": ...}),
    ("normal", ("random_normal",), {"mean": 0.0, "std": 1.0}),
    ("standard_normal", (), {}),
    ("truncated_normal", (), {"mean": 0.0, "std": 1.0, "low": -2.0, "high": 2.0}),
    ("uniform", ("random_uniform",), {"low": -0.05, "high": 0.05}),
    ("glorot_normal", ("xavier_normal",), {"gain": 1.0}),
    ("glorot_uniform", ("xavier_uniform",), {"gain": 1.0}),
    ("he_normal", ("kaiming_normal",), {"mode": "fan_in", "nonlinearity": "relu", "a": 0.0}),
    ("he_uniform", ("kaiming_uniform",), {"mode": "fan_in", "nonlinearity": "relu", "a": 0.0}),
    ("orthogonal", (), {"gain": 1.0}),
]
for _name, _aliases, _defaults in _TABLE:
    INITIALIZERS.register(_name, _defaults, aliases=_aliases)

_CHOICES = {"mode": ("fan_in", "fan_out"), "nonlinearity": ("relu", "leaky_relu", "linear", "tanh", "sigmoid", "selu")}


def check_initializer(spec: Any) -> tuple[str, dict[str, Any]]:
    """``(canonical name, full arguments)`` of an initialiser spec, or ``SpecError`` saying what is wrong."""
    if isinstance(spec, str):
        name, given = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
        name, given = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    else:
        raise SpecError(
            f"an initializer is a name such as 'he_normal' or an object such as "
            f"{{'name': 'normal', 'std': 0.02}}; got {spec!r:.80}"
        )
    defaults = INITIALIZERS.get(name)
    canonical = INITIALIZERS.canonical(name)
    unknown = set(given) - set(defaults)
    if unknown:
        allowed = ", ".join(defaults) or "no arguments"
        raise SpecError(f"initializer {canonical!r} got unknown argument(s) {sorted(unknown)}; it takes {allowed}")
    args = {**defaults, **given}
    for key, value in args.items():
        if value is ...:
            raise SpecError(f"initializer {canonical!r} needs the argument {key!r}, e.g. {{'name': {canonical!r}, {key!r}: 0.1}}")
        if key in _CHOICES:
            if value not in _CHOICES[key]:
                raise SpecError(f"initializer {canonical!r}: {key} must be one of {list(_CHOICES[key])}, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"initializer {canonical!r}: {key} must be a number, got {value!r}")
    if canonical == "uniform" and args["low"] >= args["high"]:
        raise SpecError(f"initializer 'uniform' needs low < high, got low={args['low']}, high={args['high']}")
    if canonical in ("normal", "truncated_normal") and args["std"] < 0:
        raise SpecError(f"initializer {canonical!r} needs std >= 0, got {args['std']}")
    return canonical, args

"""Activations as layers: ``{"kind": "Activation", "function": "gelu"}`` or a shorthand kind (``ReLU``).

``alpha`` is the negative slope of ``leaky_relu`` (default 0.01) and the
``alpha`` of ``elu`` (default 1.0); other functions take no argument.
"""
from __future__ import annotations

from typing import Optional

from ..fields import field_validator, model_validator
from ..kinds import ACTIVATIONS, Fields, LayerKind, register_kind

_TAKES_ALPHA = ("leaky_relu", "elu")


@register_kind
class Activation(LayerKind):
    """An activation function as a layer of its own."""

    name = "Activation"
    examples = [{"inputs": [[3, 5]], "fields": {"function": fn}} for fn in ACTIVATIONS.names()]
    examples.append({"inputs": [[4]], "fields": {"function": "leaky_relu", "alpha": 0.2}})

    class Fields(Fields):
        function: str
        alpha: Optional[float] = None

        @field_validator("function")
        @classmethod
        def _known(cls, value: str) -> str:
            ACTIVATIONS.get(value)
            return value

        @model_validator(mode="after")
        def _alpha_applies(self) -> "Activation.Fields":
            if self.alpha is not None and ACTIVATIONS.canonical(self.function) not in _TAKES_ALPHA:
                raise ValueError(f"alpha applies to {' and '.join(_TAKES_ALPHA)} only, not to {self.function!r}")
            return self

    def final_activation(self) -> str | None:
        return ACTIVATIONS.canonical(self.fields.function)


class ActivationShorthand(LayerKind):
    """``{"kind": "ReLU"}`` is ``{"kind": "Activation", "function": "relu"}``."""

    function: str = "linear"

    def final_activation(self) -> str | None:
        return self.function


# (kind, activation function, kind aliases)
SHORTHANDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ReLU", "relu", ()), ("LeakyReLU", "leaky_relu", ()), ("ELU", "elu", ()), ("SELU", "selu", ()),
    ("GELU", "gelu", ()), ("Sigmoid", "sigmoid", ()), ("Tanh", "tanh", ()), ("Softmax", "softmax", ()),
    ("SiLU", "silu", ("Swish",)), ("ReLU6", "relu6", ()), ("HardSigmoid", "hard_sigmoid", ()),
    ("HardSwish", "hard_silu", ("HardSiLU",)), ("Softplus", "softplus", ()), ("Mish", "mish", ()),
)

for _kind, _function, _aliases in SHORTHANDS:
    register_kind(type(_kind, (ActivationShorthand,), {
        "name": _kind, "function": _function, "aliases": _aliases, "__doc__": f"The {_function} activation.",
        "examples": [{"inputs": [[2, 3]], "fields": {}}], "__module__": __name__,
    }))

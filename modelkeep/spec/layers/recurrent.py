"""Recurrent layers over sequences ``(T, F)``: LSTM and GRU, stacked, optionally bidirectional.

``return_sequences=True`` gives every step's output ``(T, H*directions)``; the
default gives the last state ``(H*directions,)`` (for a bidirectional layer the
forward direction's last step joined to the backward direction's first).
Counts follow PyTorch, which keeps two bias vectors per gate (``b_ih`` and
``b_hh``); Keras keeps one, so its LSTM has ``4*h`` fewer parameters per layer.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

from ..fields import Field, field_validator
from ..kinds import LayerKind, ParameterGroup, Shape, WeightInitFields, _initializer_validator, register_kind


class _Recurrent(LayerKind):
    gates: ClassVar[int]

    class Fields(WeightInitFields):
        units: int = Field(gt=0)
        num_layers: int = Field(default=1, gt=0)
        bidirectional: bool = False
        return_sequences: bool = False
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        use_bias: bool = True
        recurrent_initializer: Optional[Any] = None

        @field_validator("recurrent_initializer")
        @classmethod
        def _known_recurrent_initializer(cls, value: Any) -> Any:
            return _initializer_validator(value)

    @property
    def directions(self) -> int:
        return 2 if self.fields.bidirectional else 1

    def output_shape(self, inputs: list[Shape]) -> Shape:
        (shape,) = inputs
        if len(shape) != 2:
            raise self.shape_error(shape, "(sequence length, features)")
        width = self.fields.units * self.directions
        return (shape[0], width) if self.fields.return_sequences else (width,)

    def _term(self, n_in: int) -> tuple[int, str]:
        g, h = self.gates, self.fields.units
        if self.fields.use_bias:
            return g * (n_in * h + h * h + 2 * h), f"{g}*({n_in}*{h}+{h}*{h}+2*{h})"
        return g * (n_in * h + h * h), f"{g}*({n_in}*{h}+{h}*{h})"

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        d = self.directions
        groups = []
        first, text = self._term(inputs[0][-1])
        groups.append(ParameterGroup(d * first, f"{d}*{text}" if d > 1 else text))
        if self.fields.num_layers > 1:
            repeat = (self.fields.num_layers - 1) * d
            rest, text = self._term(self.fields.units * d)
            groups.append(ParameterGroup(repeat * rest, f"{repeat}*{text}" if repeat > 1 else text))
        return groups


@register_kind
class LSTM(_Recurrent):
    """Long short-term memory: 4 gates, ``4*(in*h + h*h + 2*h)`` parameters per layer and direction."""

    name = "LSTM"
    gates = 4
    examples = [
        {"inputs": [[5, 3]], "fields": {"units": 4}},
        {"inputs": [[5, 3]], "fields": {"units": 4, "num_layers": 2, "bidirectional": True, "return_sequences": True,
                                        "recurrent_initializer": "orthogonal", "kernel_initializer": "glorot_uniform",
                                        "bias_initializer": "zeros"}},
    ]

    def note(self) -> str:
        return "PyTorch keeps two biases per gate; Keras counts 4*(in*h+h*h+h) per layer and direction"


@register_kind
class GRU(_Recurrent):
    """Gated recurrent unit: 3 gates, ``3*(in*h + h*h + 2*h)`` parameters per layer and direction."""

    name = "GRU"
    gates = 3
    examples = [
        {"inputs": [[6, 3]], "fields": {"units": 5, "bidirectional": True}},
        {"inputs": [[6, 3]], "fields": {"units": 2, "num_layers": 3, "return_sequences": True, "use_bias": False}},
    ]

    def note(self) -> str:
        return "Keras's default GRU (reset_after=True) counts the same; with reset_after=False 3*(in*h+h*h+h)"

"""Layer kinds: what each layer accepts, the shape it produces, the parameters it holds.

A layer kind is a small class with four jobs: validate its fields (a pydantic
model), infer its output shape from its input shapes, count its parameters
(and buffers) with the formula behind each number, and build the
``torch.nn.Module`` that runs it. The first three are pure Python so that a
spec can be checked and counted without torch and without allocating weights;
``build`` imports torch when it runs.

This module holds the base class and the registries; the kinds themselves live
in ``modelkeep.spec.layers`` (one module per family), imported at the bottom of
this file so that importing ``kinds`` registers every kind.

Shapes are per sample: no batch axis, channels first as in PyTorch
(``(C, H, W)`` for images, ``(C, L)`` for 1-D convolutions) and time first for
sequences (``(T, F)`` for recurrent and attention layers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

from pydantic import BaseModel, ConfigDict, field_validator

from .._registry import Registry
from ..errors import ShapeError, SpecError
from .initializers import check_initializer

Shape = tuple[int, ...]

LAYER_KINDS: Registry[type["LayerKind"]] = Registry("layer kind", SpecError)
ACTIVATIONS: Registry[str] = Registry("activation", SpecError)

for _name, _aliases in (
    ("relu", ()), ("leaky_relu", ()), ("elu", ()), ("selu", ()), ("gelu", ()), ("sigmoid", ()),
    ("tanh", ()), ("softmax", ()), ("silu", ("swish",)), ("linear", ("identity",)),
):
    ACTIVATIONS.register(_name, _name, aliases=_aliases)


class Fields(BaseModel):
    """Base of every kind's fields: unknown fields are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ParameterGroup:
    """Parameters (or buffers) of one layer, with the arithmetic that gives their count."""

    count: int
    formula: str
    trainable: bool = True


class LayerKind:
    """One kind of layer. Subclass, set ``name`` and ``Fields``, override what differs.

    ``examples`` lists small configurations the test-suite builds, runs and
    counts; every registered kind must have at least one, so adding a kind adds
    its tests. Each example is ``{"inputs": [shape, ...], "fields": {...}}``
    with an optional ``"dtype"`` for the inputs (``"int64"`` for token ids).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Fields: ClassVar[type[Fields]] = Fields
    arity: ClassVar[int | None] = 1  # number of inputs; None means "two or more"
    examples: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, fields: Fields, layer_name: str) -> None:
        self.fields = fields
        self.layer_name = layer_name

    # ----------------------------------------------------------- pure: no torch
    def output_shape(self, inputs: list[Shape]) -> Shape:
        return inputs[0]

    def parameters(self, inputs: list[Shape]) -> list[ParameterGroup]:
        """Learnable tensors, one group per formula term."""
        return []

    def buffers(self, inputs: list[Shape]) -> list[ParameterGroup]:
        """State that is saved but not learned by gradient (batch-norm running statistics)."""
        return []

    def note(self) -> str:
        """A remark printed beside the formula (conventions that differ between frameworks)."""
        return ""

    def check_links(self, layer_names: dict[str, "LayerKind"], shapes: dict[str, Shape], inputs: list[Shape]) -> None:
        """Validate references to other layers (tied weights); called once every shape is known."""

    # ----------------------------------------------------------- imports torch
    def build(self, inputs: list[Shape]) -> Any:
        raise NotImplementedError

    # ----------------------------------------------------------- helpers
    def shape_error(self, received: Shape | list[Shape], expected: str) -> ShapeError:
        if isinstance(received, list):
            text = "input shapes " + str([list(s) for s in received])
        else:
            text = f"input shape {list(received)}"
        return ShapeError(f"layer {self.layer_name!r} ({self.name}) received {text} but expects {expected}")

    def error(self, message: str) -> SpecError:
        return SpecError(f"layer {self.layer_name!r} ({self.name}): {message}")


def register_kind(cls: type[LayerKind]) -> type[LayerKind]:
    """Class decorator: make a kind usable in specs under ``cls.name`` (and ``cls.aliases``)."""
    LAYER_KINDS.register(cls.name, cls, aliases=cls.aliases)
    return cls


# --------------------------------------------------------------------------- shared field groups

class ActivationField(Fields):
    """An optional activation applied after the layer: ``{"kind": "Dense", "units": 10, "activation": "relu"}``."""

    activation: Optional[str] = None

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str | None) -> str | None:
        if value is not None:
            ACTIVATIONS.get(value)
        return value


def _initializer_validator(value: Any) -> Any:
    if value is not None:
        check_initializer(value)
    return value


class KernelInitFields(Fields):
    """An initialiser for a layer's weight; None keeps PyTorch's default for the layer."""

    kernel_initializer: Optional[Any] = None  # a name or {"name": ..., **args}; checked below

    @field_validator("kernel_initializer")
    @classmethod
    def _known_kernel_initializer(cls, value: Any) -> Any:
        return _initializer_validator(value)


class WeightInitFields(KernelInitFields):
    """Initialisers for a layer's weights and biases; None keeps PyTorch's default for the layer."""

    bias_initializer: Optional[Any] = None

    @field_validator("bias_initializer")
    @classmethod
    def _known_bias_initializer(cls, value: Any) -> Any:
        return _initializer_validator(value)


def initializers_of(kind: LayerKind) -> dict[str, Any]:
    """The initialiser fields a layer sets (``kernel_initializer`` -> spec), without the unset ones."""
    out = {}
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        value = getattr(kind.fields, key, None)
        if value is not None:
            out[key] = value
    return out


IntOrPair = Union[int, tuple[int, int]]


def as_tuple(value: int | tuple[int, ...] | list[int], rank: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank:
        raise SpecError(f"expected {rank} value(s), got {list(value)}")
    return value


def conv_length(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of a convolution or pooling window along one axis (PyTorch's floor rule)."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def activation_module(function: str, **args: Any) -> Any:
    from ..nn import activations

    return activations.make(ACTIVATIONS.canonical(function), **args)


def with_activation(module: Any, activation: str | None) -> Any:
    """``module`` followed by ``activation``, as one module (``Sequential`` keys ``0`` and ``1``)."""
    if activation is None or ACTIVATIONS.canonical(activation) == "linear":
        return module
    import torch.nn as nn

    return nn.Sequential(module, activation_module(activation))


def activation_of(kind: LayerKind) -> str | None:
    """The activation function a layer ends with, if any (used to tell logits from probabilities)."""
    from .layers.activation import Activation, ActivationShorthand

    if isinstance(kind.fields, ActivationField):
        return ACTIVATIONS.canonical(kind.fields.activation) if kind.fields.activation else None
    if isinstance(kind, Activation):
        return ACTIVATIONS.canonical(kind.fields.function)
    if isinstance(kind, ActivationShorthand):
        return kind.function
    return None


from . import layers  # noqa: E402,F401  (registers every kind)

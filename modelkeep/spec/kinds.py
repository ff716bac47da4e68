"""Layer kinds: what each layer accepts, the shape it produces, the parameters it holds.

A layer kind is a small class with three jobs: validate its fields (a ``Fields``
class, declared like a pydantic model: ``modelkeep.spec.fields``), infer its output
shape from its input shapes, and count its parameters
(and buffers) with the formula behind each number. All three are pure Python,
so that a spec can be checked and counted without torch and without
allocating weights. Building the ``torch.nn.Module`` that runs a layer is the
job of ``modelkeep.nn`` (its builder registry, ``modelkeep.nn.layer_builders``):
this package never imports torch or ``modelkeep.nn``, not even inside a function.

This module holds the base class and the registries; the kinds themselves live
in ``modelkeep.spec.layers`` (one module per family), which imports this module
and never the other way round: ``modelkeep.spec.model`` imports
``modelkeep.spec.layers``, so every built-in kind is registered before a spec is read.

Shapes are per sample: no batch axis, channels first as in PyTorch
(``(C, H, W)`` for images, ``(C, L)`` for 1-D convolutions) and time first for
sequences (``(T, F)`` for recurrent and attention layers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

from .._registry import Registry
from ..errors import ShapeError, SpecError
from .fields import Fields, field_validator
from .initializers import check_initializer

Shape = tuple[int, ...]

LAYER_KINDS: Registry[type["LayerKind"]] = Registry("layer kind", SpecError)
ACTIVATIONS: Registry[str] = Registry("activation", SpecError)

for _name, _aliases in (
    ("relu", ()), ("leaky_relu", ()), ("elu", ()), ("selu", ()), ("gelu", ()), ("sigmoid", ()),
    ("tanh", ()), ("softmax", ()), ("silu", ("swish",)), ("linear", ("identity",)),
    # what MobileNet/EfficientNet and Keras files use
    ("relu6", ()), ("hard_sigmoid", ()), ("hard_silu", ("hard_swish",)), ("softplus", ()), ("softsign", ()),
    ("mish", ()), ("gelu_tanh", ("gelu_approximate",)),
):
    ACTIVATIONS.register(_name, _name, aliases=_aliases)


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
    with an optional ``"dtype"`` for the inputs (``"int64"`` for token ids), or a list
    of them, one per input (``["float32", "int64"]``: a sequence and its token ids).

    How a kind is built is not declared here. A kind of your own may define
    ``build(self, inputs) -> torch.nn.Module`` (``inputs``: the per-sample input
    shapes), which ``modelkeep.nn`` calls, or register a builder function with
    ``modelkeep.nn.register_builder(name)``; the built-in kinds use the latter,
    so that this package stays free of torch. A worked example::

        @register_kind
        class Scale(LayerKind):
            # multiplies its input by one learned factor per feature (ScaleModule: your torch module)
            name = "Scale"
            examples = [{"inputs": [[4]], "fields": {}}]

            def parameters(self, inputs):
                return [ParameterGroup(inputs[0][-1], f"{inputs[0][-1]} (one factor per feature)")]

            def build(self, inputs):       # imports torch only when a model is built
                return ScaleModule(inputs[0][-1])
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Fields: ClassVar[type[Fields]] = Fields
    # number of inputs; None means "two or more"; a tuple lists the counts accepted ((1, 2): an optional second)
    arity: ClassVar[int | tuple[int, ...] | None] = 1
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

    def final_activation(self) -> str | None:
        """The canonical activation the layer ends with, if any (tells logits from probabilities)."""
        if isinstance(self.fields, ActivationField) and self.fields.activation:
            return ACTIVATIONS.canonical(self.fields.activation)
        return None

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
    """Class decorator: make a kind usable in specs under ``cls.name`` (and ``cls.aliases``).

    This makes the kind valid and countable; for ``modelkeep.build`` it also needs a
    builder: a ``build`` method on the class or ``modelkeep.nn.register_builder`` (see ``LayerKind``).
    """
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


def activation_of(kind: LayerKind) -> str | None:
    """The activation function a layer ends with, if any (used to tell logits from probabilities)."""
    return kind.final_activation()

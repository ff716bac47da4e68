"""Keras layers that join or combine tensors: ``Add``, ``Subtract``, ``Average``, ``Multiply``, ``Concatenate``,
and operations with a
number (Keras 3's ``x + 3.0``, tf-keras's ``TFOpLambda``), which become ``Rescaling`` layers.

Element-wise merges run in whichever layout their inputs already share (channels first when any input is,
so that feature maps are not permuted back and forth); ``Concatenate``'s axis is mapped to that layout.
"""
from __future__ import annotations

from typing import Any

from ...errors import FormatError
from .builder import KTensor, SpecBuilder, converter
from .config import KerasNode


def _same_layout(builder: SpecBuilder, inputs: list[KTensor]) -> list[KTensor]:
    """The inputs of a merge in one layout: channels first if any already is (fewer permutes), else Keras's."""
    moved = any(t.moved for t in inputs)
    return [builder.layout(t, moved) for t in inputs]


def _broadcast_inputs(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor]) -> list[KTensor]:
    """Inputs of an element-wise merge: equal ranks (any size-1 axes broadcast alike in both layouts), or
    per-channel vectors ``(C,)`` against channels-first maps (the spec's ``Multiply`` aligns on the channels)."""
    ranks = {len(builder.keras_shape(t)) for t in inputs}
    if len(ranks) == 1:
        return _same_layout(builder, inputs)
    if min(ranks) != 1:
        raise FormatError(f"layer {node.name!r} ({node.class_name}) broadcasts inputs of ranks {sorted(ranks)}; "
                          "modelkeep broadcasts equal ranks or per-channel vectors")
    return [builder.layout(t, True) for t in inputs]


def _scalar_operation(builder: SpecBuilder, node: KerasNode, x: KTensor) -> KTensor:
    """A Keras 3 operation of one tensor and one number (``x + 3.0``, ``x * (1/6)``) as a ``Rescaling``."""
    operands = node.config["_operands"]
    if len(operands) != 2 or sum(isinstance(o, float) for o in operands) != 1:
        raise FormatError(f"operation {node.name!r} ({node.class_name}) has operands {operands!r:.60}; modelkeep "
                          "imports one tensor with one number")
    number = next(o for o in operands if isinstance(o, float))
    first = isinstance(operands[0], str)
    fields = {"Add": (1.0, number), "Multiply": (number, 0.0),
              "Subtract": (1.0, -number) if first else (-1.0, number),
              "Divide": (1.0 / number, 0.0) if first and number else None,
              "TrueDivide": (1.0 / number, 0.0) if first and number else None}.get(node.class_name)
    if fields is None:
        raise FormatError(f"operation {node.name!r} ({node.class_name}) with a number is not supported")
    return builder.add("Rescaling", node.name, [x], moved=x.moved, scale=fields[0], offset=fields[1])


_TF_OPERATIONS = {"__operators__.add": "Add", "math.add": "Add", "math.multiply": "Multiply",
                  "__operators__.mul": "Multiply", "math.subtract": "Subtract", "__operators__.sub": "Subtract",
                  "math.truediv": "TrueDivide", "__operators__.truediv": "TrueDivide", "math.divide": "TrueDivide"}


@converter("TFOpLambda")
def _tf_operation(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    """tf-keras's TensorFlow operations on a tensor and a number (``x + 3.0``); nothing of TensorFlow runs."""
    function = str(node.config.get("function"))[:60]
    if function not in _TF_OPERATIONS or "_operands" not in node.config or len(inputs) != 1:
        raise FormatError(f"layer {node.name!r} is the TensorFlow operation {function!r}; modelkeep imports "
                          f"{', '.join(sorted(_TF_OPERATIONS))} of one tensor and one number")
    return _scalar_operation(builder, KerasNode(node.name, _TF_OPERATIONS[function], node.config), inputs[0])


@converter("Subtract", "Divide", "TrueDivide")
def _operation(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    if len(inputs) == 1 and "_operands" in node.config:
        return _scalar_operation(builder, node, inputs[0])
    if node.class_name != "Subtract" or len(inputs) != 2:
        raise FormatError(f"layer {node.name!r} ({node.class_name}) of {len(inputs)} tensors is not supported")
    first, second = _same_layout(builder, inputs)  # a - b = a + (-1 * b)
    negated = builder.add("Rescaling", f"{node.name}_negate", [second], moved=second.moved, scale=-1.0)
    return builder.add("Add", node.name, [first, negated], moved=first.moved)


@converter("Average")
def _average(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    xs = _same_layout(builder, inputs)
    total = builder.add("Add", f"{node.name}_sum", xs, moved=xs[0].moved)
    return builder.add("Rescaling", node.name, [total], moved=total.moved, scale=1.0 / len(xs))


@converter("Add")
def _add(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    if len(inputs) == 1 and "_operands" in node.config:
        return _scalar_operation(builder, node, inputs[0])
    xs = _same_layout(builder, inputs)
    return builder.add("Add", node.name, xs, moved=xs[0].moved)


@converter("Multiply")
def _multiply(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    if len(inputs) == 1 and "_operands" in node.config:
        return _scalar_operation(builder, node, inputs[0])
    xs = _broadcast_inputs(builder, node, inputs)
    widest = max(xs, key=lambda t: len(builder.shapes[t.layer]))
    return builder.add("Multiply", node.name, xs, moved=widest.moved)


def spec_axis(builder: SpecBuilder, t: KTensor, axis: int) -> int:
    """Keras's ``axis`` (0 is the batch; negative from the end) as a per-sample axis of ``t`` in the spec."""
    rank = len(builder.keras_shape(t))
    k = axis + rank if axis < 0 else axis - 1
    if not 0 <= k < rank:
        raise FormatError(f"axis {axis} is out of range for a tensor of {rank} axes")
    if not t.moved:
        return k
    return 0 if k == rank - 1 else k + 1


@converter("Concatenate")
def _concatenate(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    xs = _same_layout(builder, inputs)
    axis = spec_axis(builder, xs[0], int(node.config.get("axis", -1)))
    return builder.add("Concatenate", node.name, xs, moved=xs[0].moved, axis=axis)

"""Layers that scale one branch by another: ``Multiply`` (squeeze-and-excitation channel gates).

Inputs are aligned on the channel axis, the first per-sample axis: a ``(C,)``
or ``(C, 1, 1)`` gate multiplies a ``(C, H, W)`` feature map channel by channel,
as in MobileNetV3 and EfficientNet. No parameters.
"""
from __future__ import annotations

from ..kinds import LayerKind, Shape, register_kind


def channel_broadcast(shapes: list[Shape]) -> Shape | None:
    """The shape of the product of ``shapes`` aligned on axis 0, or ``None`` if they do not broadcast.

    A shorter shape is padded with trailing axes of size 1 (``(C,)`` is ``(C, 1, 1)``
    next to ``(C, H, W)``); on every axis the sizes must be equal or 1.
    """
    rank = max(len(shape) for shape in shapes)
    padded = [tuple(shape) + (1,) * (rank - len(shape)) for shape in shapes]
    out = []
    for sizes in zip(*padded):
        wide = {n for n in sizes if n != 1}
        if len(wide) > 1:
            return None
        out.append(wide.pop() if wide else 1)
    return tuple(out)


@register_kind
class Multiply(LayerKind):
    """Element-wise product of two or more inputs, broadcast on the channel axis: ``(C, H, W) * (C, 1, 1)``.

    ``{"kind": "Multiply", "inputs": ["features", "gate"]}``; a ``(C,)`` input
    counts as ``(C, 1, 1)``, and any axis of size 1 stretches to the others'.
    """

    name = "Multiply"
    aliases = ("Mul",)
    arity = None
    examples = [
        {"inputs": [[4, 5, 5], [4, 1, 1]], "fields": {}},
        {"inputs": [[3], [3, 4, 2]], "fields": {}},
        {"inputs": [[2, 3], [2, 3], [2, 3]], "fields": {}},
    ]

    def output_shape(self, inputs: list[Shape]) -> Shape:
        shape = channel_broadcast(inputs)
        if shape is None:
            raise self.shape_error(inputs, "inputs that broadcast on the channel axis: on each axis equal sizes or 1, "
                                           "a shorter shape counting as padded with trailing 1s ((C,) as (C, 1, 1))")
        return shape

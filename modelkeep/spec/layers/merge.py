"""Layers that join branches of a graph: ``Add`` (residual connections) and ``Concatenate``."""
from __future__ import annotations

from ..kinds import Fields, LayerKind, Shape, register_kind


@register_kind
class Add(LayerKind):
    """Element-wise sum of two or more inputs of the same shape: ``{"kind": "Add", "inputs": ["x", "y"]}``."""

    name = "Add"
    arity = None
    examples = [{"inputs": [[3, 4], [3, 4]], "fields": {}}, {"inputs": [[5], [5], [5]], "fields": {}}]

    def output_shape(self, inputs: list[Shape]) -> Shape:
        if any(shape != inputs[0] for shape in inputs):
            raise self.shape_error(inputs, "every input to have the same shape")
        return inputs[0]


@register_kind
class Concatenate(LayerKind):
    """Joins inputs along ``axis`` (per-sample axes: 0 is channels; -1 the last), the other axes equal."""

    name = "Concatenate"
    aliases = ("Concat",)
    arity = None
    examples = [{"inputs": [[3, 4, 4], [5, 4, 4]], "fields": {}}, {"inputs": [[6, 2], [6, 3]], "fields": {"axis": -1}}]

    class Fields(Fields):
        axis: int = 0

    def axis(self, rank: int) -> int:
        """``fields.axis`` as a per-sample axis in ``[0, rank)`` for inputs of ``rank`` axes."""
        axis = self.fields.axis
        if not -rank <= axis < rank:
            raise self.error(f"axis {axis} is out of range for inputs with {rank} axes")
        return axis % rank

    def output_shape(self, inputs: list[Shape]) -> Shape:
        rank = len(inputs[0])
        if any(len(shape) != rank for shape in inputs):
            raise self.shape_error(inputs, "inputs with the same number of axes")
        axis = self.axis(rank)
        for shape in inputs:
            if shape[:axis] + shape[axis + 1:] != inputs[0][:axis] + inputs[0][axis + 1:]:
                raise self.shape_error(inputs, f"inputs equal on every axis but axis {self.fields.axis}")
        return (*inputs[0][:axis], sum(shape[axis] for shape in inputs), *inputs[0][axis + 1:])

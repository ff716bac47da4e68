"""Constants folded at import time: exporters compute paddings and shapes with small subgraphs of constants.

``fold_constant`` evaluates such a node with ONNX's own reference evaluator (pure NumPy; nothing from the
file runs) once its output size, worked out from the input shapes alone, is known to be small.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .onnx_graph import GraphConverter

# Operators evaluated at import time when every input is a constant (exporters compute paddings and shapes with
# them). Those that can make more elements than their inputs hold (a declared shape, broadcasting, a gather) have
# their output size worked out from the shapes first (``_folded_size``) and are refused above the limit.
FOLDABLE = {"ConstantOfShape", "Concat", "Reshape", "Slice", "Cast", "Unsqueeze", "Squeeze", "Gather", "Mul", "Add",
            "Sub", "Div", "Neg", "Transpose", "Identity", "Equal", "Where", "Not", "Abs", "Max", "Min"}
_BROADCASTING = {"Mul", "Add", "Sub", "Div", "Equal", "Where", "Max", "Min"}
MAX_FOLDED_ELEMENTS = 1 << 20


def _folded_size(op_type: str, values: list[np.ndarray]) -> int:
    """How many elements folding would make, from the inputs' shapes alone (nothing allocated)."""
    if op_type == "ConstantOfShape":
        return math.prod(int(d) for d in values[0].reshape(-1)) if values[0].size else 1
    if op_type in _BROADCASTING:
        try:
            return math.prod(np.broadcast_shapes(*(v.shape for v in values)))
        except ValueError:
            return 0  # the evaluator reports the mismatch
    if op_type == "Gather":
        return values[1].size * (values[0].size // max(values[0].shape[0], 1) if values[0].ndim else 1)
    return sum(v.size for v in values)


def fold_constant(c: GraphConverter, node: Any) -> bool:
    """Evaluate ``node`` now if all its inputs are constants; False if it computes per sample."""
    if node.op_type not in FOLDABLE or node.domain not in ("", "ai.onnx"):
        return False
    inputs = [name for name in node.input if name]
    if not inputs or any(name not in c.constants for name in inputs):
        return False
    size = _folded_size(node.op_type, [np.asarray(c.constants[name]) for name in inputs])
    if size > MAX_FOLDED_ELEMENTS:
        raise c.refuse(node, f"would fold to {size:,} elements, over the limit of {MAX_FOLDED_ELEMENTS:,}")
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    graph = helper.make_graph([node], "fold", [helper.make_tensor_value_info(name, 0, None) for name in inputs],
                              [helper.make_tensor_value_info(name, 0, None) for name in node.output if name])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", c.opset)])
    try:
        values = ReferenceEvaluator(model).run(None, {name: c.constants[name] for name in inputs})
    except Exception as exc:
        raise c.refuse(node, f"could not be evaluated on its constant inputs ({exc})") from None
    for name, value in zip([n for n in node.output if n], values):
        value = np.asarray(value)
        if value.size > MAX_FOLDED_ELEMENTS:
            raise c.refuse(node, f"folds to {value.size:,} elements, over the limit of {MAX_FOLDED_ELEMENTS:,}")
        c.constants[name] = value
    return True


__all__ = ["FOLDABLE", "MAX_FOLDED_ELEMENTS", "fold_constant"]

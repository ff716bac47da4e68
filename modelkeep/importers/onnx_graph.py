"""An ONNX graph as a modelkeep spec: one small function per operator.

``GraphConverter`` walks the nodes (ONNX stores them in topological order),
keeps constants (initializers, ``Constant`` nodes and what folds from them)
apart from values computed per sample, and appends spec layers. Shapes come
from ONNX's own shape inference and lose their first axis, the batch: a spec
speaks per sample. An operator this module does not know, or an attribute it
cannot express (asymmetric padding, a pooling dilation), is refused with a
message naming the node, never approximated.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np

from ..errors import FormatError
from .onnx_fold import fold_constant

Handler = Callable[["GraphConverter", Any], None]
OPS: dict[str, Handler] = {}

# ONNX operator -> modelkeep activation function, for those without attributes that matter
_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus",
                "Softsign": "softsign", "HardSwish": "hard_silu", "Mish": "mish"}
_SELU = (1.67326319217681884765625, 1.05070102214813232421875)


def op(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            OPS[name] = handler
        return handler
    return register


class GraphConverter:
    """Turns one ``onnx.GraphProto`` (with inferred shapes) into a spec dict and its tensors."""

    def __init__(self, graph: Any, constants: dict[str, np.ndarray], shapes: dict[str, tuple], opset: int) -> None:
        self.graph = graph
        self.opset = opset                   # the standard operator set's version (defaults changed at 13)
        self.constants = constants           # value name -> array, folded at conversion time
        self.shapes = shapes                 # value name -> full shape (batch first; None where unknown)
        self.alias: dict[str, str] = {}      # value name -> the spec layer that computes it
        self.layers: list[dict[str, Any]] = []
        self.by_name: dict[str, dict[str, Any]] = {}
        self.tensors: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ driving
    def convert(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        for value in self.graph.input:
            if value.name not in self.constants:
                self._input(value)
        for node in self.graph.node:
            if fold_constant(self, node):
                continue
            handler = OPS.get(node.op_type)
            if handler is None:
                raise self.refuse(node, f"operator {node.op_type!r} has no modelkeep layer; "
                                        f"supported: {', '.join(sorted(OPS))}")
            handler(self, node)
        outputs = []
        for value in self.graph.output:
            if value.name not in self.alias:
                raise FormatError(f"graph output {value.name!r} is a constant, not computed from the inputs")
            outputs.append(self.alias[value.name])
        name = _identifier(self.graph.name or "onnx_model", set())
        return {"name": name, "layers": self.layers, "outputs": outputs}, self.tensors

    def _input(self, value: Any) -> None:
        shape = self.shapes.get(value.name)
        if shape is None or len(shape) < 2 or any(not isinstance(d, int) for d in shape[1:]):
            raise FormatError(f"graph input {value.name!r} needs a batch axis and fixed sizes after it, "
                              f"got {_show(shape)}")
        elem = value.type.tensor_type.elem_type
        dtype = {1: "float32", 11: "float64", 7: "int64", 6: "int64"}.get(elem)
        if dtype is None:
            raise FormatError(f"graph input {value.name!r} has element type {elem}; float and integer inputs only")
        self.add(value.name, "Input", [], output=value.name, shape=list(shape[1:]), dtype=dtype)

    # ------------------------------------------------------------------ helpers for handlers
    def add(self, wanted: str, kind: str, inputs: list[str], *, output: str, **fields: Any) -> str:
        name = _identifier(wanted, set(self.by_name))
        layer = {"kind": kind, "name": name, **fields}
        if inputs:
            layer["inputs"] = inputs
        self.layers.append(layer)
        self.by_name[name] = layer
        self.alias[output] = name
        return name

    def layer_input(self, node: Any, index: int = 0) -> str:
        value = node.input[index]
        if value in self.alias:
            return self.alias[value]
        if value in self.constants:
            raise self.refuse(node, f"input {index} ({value!r}) is a constant where a computed value is expected")
        raise self.refuse(node, f"input {value!r} is computed by no earlier node")

    def const(self, node: Any, index: int) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.constants.get(node.input[index])

    def sample_shape(self, value: str) -> tuple | None:
        """``value``'s shape without the batch axis, or None when inference did not find it."""
        shape = self.shapes.get(value)
        return None if shape is None else tuple(shape[1:])

    def rank(self, node: Any) -> int:
        shape = self.shapes.get(node.input[0])
        if shape is None:
            raise self.refuse(node, "the shape of its input is unknown (ONNX shape inference found none)")
        return len(shape)

    def node_name(self, node: Any) -> str:
        return node.name or node.output[0]

    def refuse(self, node: Any, why: str) -> FormatError:
        return FormatError(f"ONNX node {self.node_name(node)!r} ({node.op_type}): {why}")


def attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        values[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return values


def _identifier(text: str, taken: set[str]) -> str:
    name = re.sub(r"\W", "_", text).strip("_") or "node"
    if name[0].isdigit():
        name = f"n_{name}"
    base, n = name, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def _show(shape: Any) -> str:
    return "an unknown shape" if shape is None else str(list(shape))


# ---------------------------------------------------------------------- values that pass through
@op("Identity", "Dropout")
def _pass_through(c: GraphConverter, node: Any) -> None:
    if node.input[0] in c.constants:
        c.constants[node.output[0]] = c.constants[node.input[0]]
    else:
        c.alias[node.output[0]] = c.layer_input(node)


@op("Constant")
def _constant(c: GraphConverter, node: Any) -> None:
    from onnx import numpy_helper

    attrs = attributes(node)
    if "value" in attrs:
        c.constants[node.output[0]] = numpy_helper.to_array(attrs["value"])
        return
    for key in ("value_float", "value_int", "value_floats", "value_ints"):
        if key in attrs:
            c.constants[node.output[0]] = np.asarray(attrs[key])
            return
    raise c.refuse(node, f"constant of an unsupported kind ({sorted(attrs)})")


@op("Transpose")
def _transpose(c: GraphConverter, node: Any) -> None:
    value = c.const(node, 0)
    if value is None:
        raise c.refuse(node, "transposing a computed value is not supported (only constants are folded)")
    perm = attributes(node).get("perm")
    c.constants[node.output[0]] = np.transpose(value, perm) if perm else value.T


# ---------------------------------------------------------------------- layers with weights
@op("Gemm")
def _gemm(c: GraphConverter, node: Any) -> None:
    attrs = attributes(node)
    weight = c.const(node, 1)
    if weight is None or weight.ndim != 2 or attrs.get("transA", 0):
        raise c.refuse(node, "needs a constant 2-D B and an untransposed A")
    weight = weight if attrs.get("transB", 0) else weight.T          # (out, in), as torch.nn.Linear
    weight = weight * attrs.get("alpha", 1.0)
    bias = c.const(node, 2)
    name = c.add(c.node_name(node), "Dense", [c.layer_input(node)], output=node.output[0],
                 units=int(weight.shape[0]), use_bias=bias is not None)
    c.tensors[f"layers.{name}.weight"] = weight
    if bias is not None:
        bias = np.broadcast_to(bias * attrs.get("beta", 1.0), (weight.shape[0],))
        c.tensors[f"layers.{name}.bias"] = bias


@op("MatMul")
def _matmul(c: GraphConverter, node: Any) -> None:
    weight = c.const(node, 1)
    if weight is None or weight.ndim != 2:
        raise c.refuse(node, "only a computed value times a constant 2-D matrix becomes a Dense layer")
    name = c.add(c.node_name(node), "Dense", [c.layer_input(node)], output=node.output[0],
                 units=int(weight.shape[1]), use_bias=False)
    c.tensors[f"layers.{name}.weight"] = weight.T


@op("Add", "Sum")
def _add(c: GraphConverter, node: Any) -> None:
    constants = [i for i, v in enumerate(node.input) if v in c.constants]
    if not constants:
        c.add(c.node_name(node), "Add", [c.layer_input(node, i) for i in range(len(node.input))],
              output=node.output[0])
        return
    if len(node.input) != 2 or len(constants) != 1:
        raise c.refuse(node, "adds more than one constant")
    source = c.layer_input(node, 1 - constants[0])
    bias = c.constants[node.input[constants[0]]]
    layer = c.by_name[source]
    units = layer.get("units")
    if layer["kind"] != "Dense" or layer.get("use_bias") or bias.size != units:
        raise c.refuse(node, "adding a constant is supported only as the bias of a MatMul")
    layer["use_bias"] = True                                           # MatMul + Add is one Dense layer
    c.tensors[f"layers.{source}.bias"] = bias.reshape(units)
    c.alias[node.output[0]] = source


def spatial_fields(c: GraphConverter, node: Any, attrs: dict[str, Any], rank: int,
                   source: str | None = None) -> tuple[str, dict[str, Any]]:
    """The layer a convolution or pooling node reads, with its stride and padding as spec fields.

    Asymmetric padding becomes a ``ZeroPaddingND`` layer in front (``source`` is then that layer), which is
    exact for convolutions and for average pooling that counts the padding; other nodes refuse it.
    """
    source = source or c.layer_input(node)
    pads = list(attrs.get("pads", [0] * 2 * rank))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID", ""):
        raise c.refuse(node, f"auto_pad={auto_pad} is not supported; export with explicit pads")
    if auto_pad == "VALID":
        pads = [0] * 2 * rank
    fields = {"stride": list(attrs.get("strides", [1] * rank)), "padding": pads[:rank]}
    if pads[:rank] != pads[rank:]:
        zero_pads_exactly = node.op_type == "Conv" or (
            node.op_type == "AveragePool" and attrs.get("count_include_pad", 0))
        if not zero_pads_exactly:
            raise c.refuse(node, f"asymmetric padding {pads} has no PyTorch equivalent for {node.op_type}")
        pairs = [[pads[i], pads[i + rank]] for i in range(rank)]
        source = c.add(c.node_name(node) + "_pad", f"ZeroPadding{rank}D", [source], output=node.output[0] + "/pad",
                       padding=pairs)
        fields["padding"] = [0] * rank
    return source, fields


@op("Conv")
def _conv(c: GraphConverter, node: Any) -> None:
    attrs = attributes(node)
    weight = c.const(node, 1)
    if weight is None:
        raise c.refuse(node, "the weight must be a constant")
    rank = weight.ndim - 2
    if rank not in (1, 2):
        raise c.refuse(node, f"{rank}-D convolution: only 1-D and 2-D are supported")
    bias = c.const(node, 2)
    source, fields = spatial_fields(c, node, attrs, rank)
    name = c.add(c.node_name(node), f"Conv{rank}D", [source], output=node.output[0],
                 filters=int(weight.shape[0]), kernel_size=list(weight.shape[2:]),
                 dilation=list(attrs.get("dilations", [1] * rank)), groups=int(attrs.get("group", 1)),
                 use_bias=bias is not None, **fields)
    c.tensors[f"layers.{name}.weight"] = weight
    if bias is not None:
        c.tensors[f"layers.{name}.bias"] = bias


@op("BatchNormalization")
def _batch_norm(c: GraphConverter, node: Any) -> None:
    attrs = attributes(node)
    values = [c.const(node, i) for i in range(1, 5)]
    if any(v is None for v in values):
        raise c.refuse(node, "scale, bias, mean and variance must be constants (an inference graph)")
    rank = c.rank(node) - 1
    if rank not in (1, 2, 3):
        raise c.refuse(node, f"per-sample rank {rank}: BatchNorm1D/2D take (C,), (C, L) or (C, H, W)")
    kind = "BatchNorm2D" if rank == 3 else "BatchNorm1D"
    name = c.add(c.node_name(node), kind, [c.layer_input(node)], output=node.output[0],
                 epsilon=float(attrs.get("epsilon", 1e-5)), momentum=round(1.0 - float(attrs.get("momentum", 0.9)), 6))
    for key, value in zip(("weight", "bias", "running_mean", "running_var"), values):
        c.tensors[f"layers.{name}.{key}"] = value
    c.tensors[f"layers.{name}.num_batches_tracked"] = np.asarray(0, dtype=np.int64)


@op("Gather")
def _gather(c: GraphConverter, node: Any) -> None:
    table = c.const(node, 0)
    if table is None or table.ndim != 2 or attributes(node).get("axis", 0) != 0:
        raise c.refuse(node, "only a lookup in a constant 2-D table (an embedding) is supported")
    name = c.add(c.node_name(node), "Embedding", [c.layer_input(node, 1)], output=node.output[0],
                 num_embeddings=int(table.shape[0]), embedding_dim=int(table.shape[1]))
    c.tensors[f"layers.{name}.weight"] = table


# ---------------------------------------------------------------------- activations
@op(*_ACTIVATIONS)
def _activation(c: GraphConverter, node: Any) -> None:
    c.add(c.node_name(node), "Activation", [c.layer_input(node)], output=node.output[0],
          function=_ACTIVATIONS[node.op_type])


@op("LeakyRelu", "Elu")
def _with_alpha(c: GraphConverter, node: Any) -> None:
    function, default = {"LeakyRelu": ("leaky_relu", 0.01), "Elu": ("elu", 1.0)}[node.op_type]
    alpha = float(attributes(node).get("alpha", default))
    c.add(c.node_name(node), "Activation", [c.layer_input(node)], output=node.output[0],
          function=function, alpha=alpha)


@op("Selu", "HardSigmoid", "Gelu", "Clip")
def _fixed_activation(c: GraphConverter, node: Any) -> None:
    attrs = attributes(node)
    function = None
    if node.op_type == "Selu":
        ok = math.isclose(attrs.get("alpha", _SELU[0]), _SELU[0], rel_tol=1e-6) and \
            math.isclose(attrs.get("gamma", _SELU[1]), _SELU[1], rel_tol=1e-6)
        function = "selu" if ok else None
    elif node.op_type == "HardSigmoid":
        ok = math.isclose(attrs.get("alpha", 0.2), 1 / 6, rel_tol=1e-6) and math.isclose(attrs.get("beta", 0.5), 0.5)
        function = "hard_sigmoid" if ok else None
    elif node.op_type == "Gelu":
        function = {"none": "gelu", "tanh": "gelu_tanh"}.get(attrs.get("approximate", "none"))
    else:
        low = c.const(node, 1) if len(node.input) > 1 else attrs.get("min")
        high = c.const(node, 2) if len(node.input) > 2 else attrs.get("max")
        bounds = (None if low is None else float(np.asarray(low)), None if high is None else float(np.asarray(high)))
        function = {(0.0, 6.0): "relu6", (0.0, None): "relu"}.get(bounds)
    if function is None:
        raise c.refuse(node, f"attributes {attrs} differ from the PyTorch activation's fixed constants")
    c.add(c.node_name(node), "Activation", [c.layer_input(node)], output=node.output[0], function=function)


@op("Softmax")
def _softmax(c: GraphConverter, node: Any) -> None:
    rank = c.rank(node)
    axis = attributes(node).get("axis", 1 if c.opset < 13 else -1)
    if axis % rank != rank - 1:
        raise c.refuse(node, f"softmax over axis {axis} of a rank-{rank} value; only the last axis is supported")
    c.add(c.node_name(node), "Softmax", [c.layer_input(node)], output=node.output[0])


__all__ = ["GraphConverter", "OPS", "attributes", "op", "spatial_fields"]

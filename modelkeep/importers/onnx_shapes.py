"""ONNX operators that move or pool values without weights: reshapes, pooling, concatenation.

Registered into ``onnx_graph.OPS`` on import. A reshape becomes ``Flatten``
when it leaves one axis per sample, otherwise ``Reshape`` to the shape ONNX's
shape inference found; any reshape that would mix samples (touch the batch
axis) is refused.
"""
from __future__ import annotations

from typing import Any

from .onnx_graph import GraphConverter, spatial_fields, attributes, op


@op("Flatten")
def _flatten(c: GraphConverter, node: Any) -> None:
    if attributes(node).get("axis", 1) != 1:
        raise c.refuse(node, "only Flatten(axis=1) keeps the batch axis apart")
    c.add(c.node_name(node), "Flatten", [c.layer_input(node)], output=node.output[0])


@op("Reshape", "Squeeze", "Unsqueeze")
def _reshape(c: GraphConverter, node: Any) -> None:
    source, target = c.shapes.get(node.input[0]), c.shapes.get(node.output[0])
    if node.input[0] in c.constants:
        raise c.refuse(node, "reshaping a constant is not supported")
    if source is None or target is None or any(not isinstance(d, int) for d in target[1:]):
        raise c.refuse(node, "its output shape is unknown (ONNX shape inference found none)")
    if not _same_batch(source[0], target[0]):
        raise c.refuse(node, f"it changes the batch axis ({source[0]} -> {target[0]})")
    per_sample = list(target[1:])
    if len(per_sample) == 1:
        c.add(c.node_name(node), "Flatten", [c.layer_input(node)], output=node.output[0])
    elif list(source[1:]) == per_sample:
        c.alias[node.output[0]] = c.layer_input(node)
    else:
        c.add(c.node_name(node), "Reshape", [c.layer_input(node)], output=node.output[0], shape=per_sample)


def _same_batch(a: Any, b: Any) -> bool:
    return a == b or (not isinstance(a, int) and not isinstance(b, int))


@op("MaxPool", "AveragePool")
def _pool(c: GraphConverter, node: Any) -> None:
    attrs = attributes(node)
    kernel = list(attrs["kernel_shape"])
    rank = len(kernel)
    if rank not in (1, 2):
        raise c.refuse(node, f"{rank}-D pooling: only 1-D and 2-D are supported")
    if any(d != 1 for d in attrs.get("dilations", [1] * rank)):
        raise c.refuse(node, "pooling with dilation has no spec equivalent")
    if len(node.output) > 1 and node.output[1]:
        raise c.refuse(node, "the indices output of MaxPool is not supported")
    source, fields = spatial_fields(c, node, attrs, rank)
    if node.op_type == "AveragePool":
        fields["count_include_pad"] = bool(attrs.get("count_include_pad", 0))   # ONNX's default excludes it
        kind = f"AvgPool{rank}D"
    else:
        kind = f"MaxPool{rank}D"
    c.add(c.node_name(node), kind, [source], output=node.output[0], pool_size=kernel,
          ceil_mode=bool(attrs.get("ceil_mode", 0)), **fields)


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(c: GraphConverter, node: Any) -> None:
    rank = c.rank(node) - 2
    if rank not in (1, 2):
        raise c.refuse(node, f"global pooling over {rank} spatial axes; 1 or 2 are supported")
    kind = "GlobalAvgPool" if node.op_type == "GlobalAveragePool" else "GlobalMaxPool"
    pooled = c.add(c.node_name(node) + "_pool", kind, [c.layer_input(node)], output=node.output[0])
    channels = c.sample_shape(node.input[0])[0]                      # (C,) -> (C, 1[, 1]): ONNX keeps the axes
    c.add(c.node_name(node), "Reshape", [pooled], output=node.output[0], shape=[channels] + [1] * rank)


@op("Pad")
def _pad(c: GraphConverter, node: Any) -> None:
    attrs = attributes(node)
    pads = c.const(node, 1) if len(node.input) > 1 else attrs.get("pads")
    value = c.const(node, 2) if len(node.input) > 2 else attrs.get("value", 0.0)
    rank = c.rank(node)
    if attrs.get("mode", "constant") != "constant" or pads is None or (value is not None and float(value) != 0.0):
        raise c.refuse(node, "only zero padding with constant pads becomes a ZeroPadding layer")
    pads = [int(p) for p in pads]
    spatial = rank - 2
    if spatial not in (1, 2) or any(pads[i] or pads[i + rank] for i in (0, 1)) or min(pads) < 0:
        raise c.refuse(node, f"pads {pads}: only non-negative padding of 1 or 2 spatial axes is supported")
    pairs = [[pads[i], pads[i + rank]] for i in range(2, rank)]
    c.add(c.node_name(node), f"ZeroPadding{spatial}D", [c.layer_input(node)], output=node.output[0], padding=pairs)


@op("Mul")
def _multiply(c: GraphConverter, node: Any) -> None:
    if any(value in c.constants for value in node.input):
        raise c.refuse(node, "multiplying by a constant is not supported")
    c.add(c.node_name(node), "Multiply", [c.layer_input(node, 0), c.layer_input(node, 1)], output=node.output[0])


@op("Concat")
def _concat(c: GraphConverter, node: Any) -> None:
    rank = c.rank(node)
    axis = attributes(node)["axis"] % rank
    if axis == 0:
        raise c.refuse(node, "concatenating along the batch axis mixes samples")
    c.add(c.node_name(node), "Concatenate", [c.layer_input(node, i) for i in range(len(node.input))],
          output=node.output[0], axis=axis - 1)                           # per-sample axes lose the batch


__all__: list[str] = []

"""Keras convolutions, pooling and padding -> channels-first spec layers.

Kernels: ``(k..., in/groups, out)`` becomes PyTorch's ``(out, in/groups, k...)``;
a depthwise kernel ``(k..., in, multiplier)`` becomes a grouped convolution's
``(in*multiplier, 1, k...)`` (output channel ``c*multiplier + m``, as
TensorFlow orders them); a separable convolution is that depthwise convolution
followed by a 1x1 one. TensorFlow's ``padding="same"`` pads ``total // 2``
before and the rest after; when the two differ (a stride above 1), a
``ZeroPadding`` layer before a ``valid`` convolution says so exactly.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import FormatError
from .config import KerasNode
from .builder import KTensor, SpecBuilder, converter
from .layers import arrays, finish


def _tuple(node: KerasNode, key: str, rank: int, default: Any) -> tuple[int, ...]:
    value = node.config.get(key, default)
    value = default if value is None else value
    values = [value] * rank if isinstance(value, int) else list(value)
    if len(values) != rank or not all(isinstance(v, int) and v > 0 for v in values):
        raise FormatError(f"layer {node.name!r} ({node.class_name}) has an invalid {key} {value!r:.40}")
    return tuple(values)


def _rank(node: KerasNode) -> int:
    return 1 if "1D" in node.class_name else 2


def _channels_last(node: KerasNode) -> bool:
    fmt = node.config.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise FormatError(f"layer {node.name!r} ({node.class_name}) has an unknown data_format {fmt!r:.40}")
    return fmt == "channels_last"


def same_pads(sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
              dilation: tuple[int, ...]) -> list[tuple[int, int]]:
    """TensorFlow's ``padding="same"``: ``(before, after)`` per axis."""
    pads = []
    for n, k, s, d in zip(sizes, kernel, stride, dilation):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _padded_input(builder: SpecBuilder, node: KerasNode, x: KTensor, kernel: tuple[int, ...],
                  stride: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[KTensor, Any]:
    """The input and the spec ``padding`` of a convolution, with a ZeroPadding layer first when needed."""
    padding = str(node.config.get("padding", "valid")).lower()
    rank = len(kernel)
    sizes = builder.shapes[x.layer][1:]
    if padding == "valid":
        return x, "valid"
    if padding == "causal" and rank == 1:
        pads = [((kernel[0] - 1) * dilation[0], 0)]
    elif padding == "same":
        pads = same_pads(sizes, kernel, stride, dilation)
    else:
        raise FormatError(f"layer {node.name!r} ({node.class_name}) has padding {padding!r:.20}; supported: valid, "
                          "same" + (", causal" if rank == 1 else ""))
    if all(a == b for a, b in pads):
        return x, [a for a, _ in pads]
    kind = "ZeroPadding1D" if rank == 1 else "ZeroPadding2D"
    padded = builder.add(kind, f"{node.name}_pad", [x], moved=x.moved, padding=[list(p) for p in pads])
    return padded, "valid"


@converter("Conv1D", "Conv2D", "Convolution1D", "Convolution2D")
def _conv(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg, rank = node.config, _rank(node)
    x = builder.layout(inputs[0], _channels_last(node))
    kernel, stride = _tuple(node, "kernel_size", rank, 3), _tuple(node, "strides", rank, 1)
    dilation, groups = _tuple(node, "dilation_rate", rank, 1), int(cfg.get("groups", 1) or 1)
    filters, bias = int(cfg["filters"]), bool(cfg.get("use_bias", True))
    cin = builder.shapes[x.layer][0]
    if groups < 1 or cin % groups:
        raise FormatError(f"layer {node.name!r} ({node.class_name}): {cin} input channels, groups={groups}")
    expected = [("kernel", (*kernel, cin // groups, filters))] + ([("bias", (filters,))] if bias else [])
    got = arrays(node, weights, expected)
    params = {"weight": np.ascontiguousarray(np.moveaxis(got[0], (-1, -2), (0, 1)))}
    if bias:
        params["bias"] = got[1]
    x, padding = _padded_input(builder, node, x, kernel, stride, dilation)
    return finish(builder, node, f"Conv{rank}D", [x], moved=x.moved, params=params, filters=filters,
                  kernel_size=list(kernel), stride=list(stride), padding=padding, dilation=list(dilation),
                  groups=groups, use_bias=bias)


def _depthwise(builder: SpecBuilder, node: KerasNode, x: KTensor, kernel_array: np.ndarray,
               bias: np.ndarray | None, *, name: str, last: bool) -> tuple[KTensor, dict[str, Any], dict[str, Any]]:
    """The grouped convolution of a depthwise kernel ``(k..., in, multiplier)``; ``last``: it ends the layer."""
    rank = kernel_array.ndim - 2
    kernel, stride = kernel_array.shape[:rank], _tuple(node, "strides", rank, 1)
    dilation = _tuple(node, "dilation_rate", rank, 1)
    cin, mult = kernel_array.shape[-2:]
    weight = kernel_array.reshape(*kernel, cin * mult)                      # channel c*mult + m
    weight = np.ascontiguousarray(np.moveaxis(weight, -1, 0)[:, None])     # (in*mult, 1, k...)
    params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    x, padding = _padded_input(builder, node, x, tuple(kernel), stride, dilation)
    fields = dict(filters=cin * mult, kernel_size=list(kernel), stride=list(stride), padding=padding,
                  dilation=list(dilation), groups=cin, use_bias=bias is not None)
    if last:
        return x, params, fields
    return builder.add(f"Conv{rank}D", name, [x], moved=x.moved, params=params, **fields), {}, {}


@converter("DepthwiseConv1D", "DepthwiseConv2D")
def _depthwise_conv(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg, rank = node.config, _rank(node)
    x = builder.layout(inputs[0], _channels_last(node))
    kernel, mult = _tuple(node, "kernel_size", rank, 3), int(cfg.get("depth_multiplier", 1))
    cin, bias = builder.shapes[x.layer][0], bool(cfg.get("use_bias", True))
    expected = [("depthwise_kernel", (*kernel, cin, mult))] + ([("bias", (cin * mult,))] if bias else [])
    got = arrays(node, weights, expected)
    x, params, fields = _depthwise(builder, node, x, got[0], got[1] if bias else None, name=node.name, last=True)
    return finish(builder, node, f"Conv{rank}D", [x], moved=x.moved, params=params, **fields)


@converter("SeparableConv1D", "SeparableConv2D")
def _separable_conv(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg, rank = node.config, _rank(node)
    x = builder.layout(inputs[0], _channels_last(node))
    kernel, mult = _tuple(node, "kernel_size", rank, 3), int(cfg.get("depth_multiplier", 1))
    cin, filters, bias = builder.shapes[x.layer][0], int(cfg["filters"]), bool(cfg.get("use_bias", True))
    expected = [("depthwise_kernel", (*kernel, cin, mult)), ("pointwise_kernel", (*(1,) * rank, cin * mult, filters))]
    got = arrays(node, weights, expected + ([("bias", (filters,))] if bias else []))
    x, _, _ = _depthwise(builder, node, x, got[0], None, name=f"{node.name}_depthwise", last=False)
    params = {"weight": np.ascontiguousarray(np.moveaxis(got[1], (-1, -2), (0, 1)))}
    if bias:
        params["bias"] = got[2]
    return finish(builder, node, f"Conv{rank}D", [x], moved=x.moved, params=params, filters=filters,
                  kernel_size=1, use_bias=bias)


@converter("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
           "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D")
def _pool(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    rank, mode = _rank(node), "Max" if node.class_name.startswith("Max") else "Avg"
    x = builder.layout(inputs[0], _channels_last(node))
    pool = _tuple(node, "pool_size", rank, 2)
    stride = _tuple(node, "strides", rank, pool) if node.config.get("strides") is not None else pool
    sizes = builder.shapes[x.layer][1:]
    padding = str(node.config.get("padding", "valid")).lower()
    fields: dict[str, Any] = {"pool_size": list(pool), "stride": list(stride)}
    if padding == "same":
        pads = same_pads(sizes, pool, stride, (1,) * rank)
        wanted = tuple(math.ceil(n / s) for n, s in zip(sizes, stride))
        if all(a == 0 for a, _ in pads):
            fields["ceil_mode"] = True  # windows overhanging the end see only the input, as TensorFlow's do
        elif all(a == b for a, b in pads):
            fields["padding"] = [a for a, _ in pads]
            if mode == "Avg":
                fields["count_include_pad"] = False  # TensorFlow averages over the input's part of the window
        else:
            raise FormatError(f"layer {node.name!r} ({node.class_name}) with padding='same' pads {pads} here, which "
                              "modelkeep's pooling cannot express; use padding='valid' or sizes divisible by strides")
        out = builder.add(f"{mode}Pool{rank}D", node.name, [x], moved=x.moved, **fields)
        if builder.shapes[out.layer][1:] != wanted:
            raise FormatError(f"layer {node.name!r} ({node.class_name}): padding='same' cannot be matched here")
        return out
    if padding != "valid":
        raise FormatError(f"layer {node.name!r} ({node.class_name}) has padding {padding!r:.20}")
    return builder.add(f"{mode}Pool{rank}D", node.name, [x], moved=x.moved, **fields)


@converter("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
           "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalMaxPool1D", "GlobalMaxPool2D")
def _global_pool(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    kind = "GlobalMaxPool" if "Max" in node.class_name else "GlobalAvgPool"
    x = inputs[0]
    if not _channels_last(node):
        x = builder.layout(x, False)
        fmt = "channels_first"
    else:
        fmt = "channels_first" if x.moved else "channels_last"
    keep = bool(node.config.get("keepdims"))
    rank = len(builder.shapes[x.layer])
    out = builder.add(kind, f"{node.name}_pool" if keep else node.name, [x], data_format=fmt)
    if not keep:
        return out
    channels = builder.shapes[out.layer][0]  # keepdims: (1, 1, C) in Keras, (C, 1, 1) channels first
    if _channels_last(node):
        return builder.add("Reshape", node.name, [out], moved=True, shape=[channels] + [1] * (rank - 1))
    return builder.add("Reshape", node.name, [out], shape=[channels] + [1] * (rank - 1))


@converter("ZeroPadding1D", "ZeroPadding2D")
def _zero_padding(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    rank = _rank(node)
    x = builder.layout(inputs[0], _channels_last(node))
    padding = node.config.get("padding", 1)
    return builder.add(f"ZeroPadding{rank}D", node.name, [x], moved=x.moved, padding=padding)


@converter("UpSampling1D", "UpSampling2D")
def _up_sampling(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    rank = _rank(node)
    x = builder.layout(inputs[0], _channels_last(node))
    interpolation = str(node.config.get("interpolation", "nearest"))
    if interpolation not in ("nearest", "bilinear"):
        raise FormatError(f"layer {node.name!r} ({node.class_name}) interpolates {interpolation[:20]!r}; modelkeep "
                          "imports nearest and bilinear")
    size = list(_tuple(node, "size", rank, 2))
    return builder.add(f"UpSampling{rank}D", node.name, [x], moved=x.moved, size=size,
                       interpolation="nearest" if interpolation == "nearest" else "linear")

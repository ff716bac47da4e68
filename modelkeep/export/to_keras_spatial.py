"""Convolutions, padding and pooling as Keras 3 layers, channels first (``data_format="channels_first"``).

PyTorch pads a convolution or pooling window symmetrically by a number of
pixels; Keras only knows ``"valid"`` and ``"same"``, so integer padding becomes
a ``ZeroPadding1D/2D`` layer in front. That is exact for convolutions and for
average pooling (PyTorch counts the padded zeros, ``count_include_pad``); max
pooling pads with -inf, so zero padding is used only where the input is known
to be non-negative (after a relu or sigmoid), and refused otherwise.
Kernels go from PyTorch's ``(out, in/groups, *window)`` to Keras's ``(*window, in/groups, out)``.
"""
from __future__ import annotations

from .to_keras_layers import KerasGraph, Step, activation_parts, array, converts, non_negative, then_activation

_FIRST = "channels_first"


def _zero_pad(graph: KerasGraph, step: Step, pairs: list[tuple[int, int]]) -> str:
    """A ``ZeroPadding{1,2}D`` in front of ``step``'s input; returns its name."""
    shape = step.in_shapes[0]
    padded = (shape[0], *(n + a + b for n, (a, b) in zip(shape[1:], pairs)))
    padding = list(pairs[0]) if len(pairs) == 1 else [list(pair) for pair in pairs]
    return graph.add(step, f"ZeroPadding{len(pairs)}D", {"padding": padding, "data_format": _FIRST},
                     name=graph.extra_name(step.name, "pad"), shape=padded)


@converts("ZeroPadding1D", "ZeroPadding2D")
def _zero_padding(step: Step, graph: KerasGraph) -> str:
    pairs = step.layer.kind.pads()
    padding = list(pairs[0]) if len(pairs) == 1 else [list(pair) for pair in pairs]
    return graph.add(step, f"ZeroPadding{len(pairs)}D", {"padding": padding, "data_format": _FIRST})


@converts("Conv1D", "Conv2D")
def _conv(step: Step, graph: KerasGraph) -> str:
    kind, f = step.layer.kind, step.fields
    rank = kind.rank
    strides, dilation = kind.per_axis("stride"), kind.per_axis("dilation")
    if max(strides) > 1 and max(dilation) > 1:
        raise step.refuse(f"Keras convolutions do not take a stride above 1 (stride={f.stride}) together with a "
                          f"dilation above 1 (dilation={f.dilation})")
    inline, after = activation_parts(step, f.activation, None)
    pad = kind.padding()
    sources = step.sources
    if pad != "same" and any(pad):
        sources = [_zero_pad(graph, step, [(p, p) for p in pad])]
    conv = step.module
    kernel = array(conv.weight).transpose(*range(2, 2 + rank), 1, 0)  # (out, in/g, *window) -> (*window, in/g, out)
    weights = [kernel] + ([array(conv.bias)] if f.use_bias else [])
    config = {
        "filters": f.filters, "kernel_size": list(kind.per_axis("kernel_size")), "strides": list(strides),
        "padding": "same" if pad == "same" else "valid", "data_format": _FIRST, "dilation_rate": list(dilation),
        "groups": f.groups, "activation": inline, "use_bias": f.use_bias,
    }
    name = graph.add(step, f"Conv{rank}D", config, sources=sources, weights=weights)
    return then_activation(graph, step, name, after)


@converts("MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D")
def _pool(step: Step, graph: KerasGraph) -> str:
    kind = step.layer.kind
    kernel, stride, pad = kind.geometry()
    floor = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(step.in_shapes[0][1:], kernel, stride, pad))
    if floor != tuple(step.out_shape[1:]):
        raise step.refuse("with ceil_mode=True it pools a last, partial window that Keras pooling does not have "
                          f"(output {list(step.out_shape[1:])} instead of {list(floor)})")
    sources = step.sources
    if any(pad):
        if kind.mode == "Max" and not non_negative(step):
            raise step.refuse(f"max pooling with padding={list(pad)} pads with -inf, which Keras cannot express; "
                              "zero padding gives the same result only after a non-negative activation (relu)")
        sources = [_zero_pad(graph, step, [(p, p) for p in pad])]
    class_name = ("MaxPooling" if kind.mode == "Max" else "AveragePooling") + f"{kind.rank}D"
    config = {"pool_size": list(kernel), "strides": list(stride), "padding": "valid", "data_format": _FIRST}
    return graph.add(step, class_name, config, sources=sources)


@converts("AdaptiveAvgPool2D")
def _adaptive_avg_pool(step: Step, graph: KerasGraph) -> str:
    # PyTorch's window i spans [floor(i*n/o), ceil((i+1)*n/o)): equal windows of n/o where o divides n,
    # and each input pixel repeated o/n times where n divides o (nearest upsampling)
    sizes, outs = step.in_shapes[0][1:], step.out_shape[1:]
    if tuple(outs) == (1, 1):
        return graph.add(step, "GlobalAveragePooling2D", {"data_format": _FIRST, "keepdims": True})
    if any(n % o and o % n for n, o in zip(sizes, outs)):
        raise step.refuse(f"adaptive pooling of {sizes[0]}x{sizes[1]} to {outs[0]}x{outs[1]} uses windows of unequal "
                          "sizes; Keras pools with one window size (export works where one size divides the other)")
    window = [n // o if n % o == 0 else 1 for n, o in zip(sizes, outs)]
    repeat = [1 if n % o == 0 else o // n for n, o in zip(sizes, outs)]
    name = step.sources[0]
    if window != [1, 1]:
        pooled = (step.out_shape[0], *(n // w for n, w in zip(sizes, window)))
        config = {"pool_size": window, "strides": window, "padding": "valid", "data_format": _FIRST}
        last = repeat == [1, 1]
        name = graph.add(step, "AveragePooling2D", config, shape=pooled,
                         name=None if last else graph.extra_name(step.name, "pool"))
        if last:
            return name
    return graph.add(step, "UpSampling2D", {"size": repeat, "data_format": _FIRST, "interpolation": "nearest"},
                     sources=[name])


@converts("GlobalAvgPool", "GlobalMaxPool")
def _global_pool(step: Step, graph: KerasGraph) -> str:
    axes = len(step.in_shapes[0]) - 1  # the axes pooled over
    if axes not in (1, 2, 3):
        raise step.refuse(f"Keras has global pooling over 1 to 3 axes; this input has {axes + 1} axes")
    mode = "Average" if step.layer.kind_name == "GlobalAvgPool" else "Max"
    config = {"data_format": step.fields.data_format, "keepdims": False}
    return graph.add(step, f"Global{mode}Pooling{axes}D", config)

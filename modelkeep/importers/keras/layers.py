"""Per-layer conversions of Keras's core layers: inputs, Dense, shape layers, activations, Embedding,
normalisation (batch, layer, preprocessing), Rescaling, TimeDistributed(Dense).

Each converter reads one Keras layer's config and weights (in Keras's order,
as ``layer.get_weights()``), checks their shapes, and adds spec layers with the
weights in PyTorch's layout (a Dense kernel ``(in, out)`` becomes ``(out, in)``).
Convolutions and pooling are in ``conv.py``, LSTM and GRU in ``recurrent.py``,
merges and operations with numbers in ``merge.py``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import FormatError
from .builder import KTensor, SpecBuilder, converter
from .config import KerasNode

# Keras activation name -> modelkeep's (None: the identity)
_ACTIVATIONS = {
    "linear": None, "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax", "elu": "elu",
    "selu": "selu", "gelu": "gelu", "silu": "silu", "swish": "silu", "softplus": "softplus", "softsign": "softsign",
    "relu6": "relu6", "mish": "mish", "hard_silu": "hard_silu", "hard_swish": "hard_silu",
    "hard_sigmoid": "hard_sigmoid", "leaky_relu": "leaky_relu",
}


def arrays(node: KerasNode, weights: list[Any], expected: list[tuple[str, tuple[int, ...]]]) -> list[np.ndarray]:
    """``weights`` as float32 arrays, checked against ``expected`` ``(what, shape)`` pairs."""
    if len(weights) != len(expected):
        names = ", ".join(what for what, _ in expected) or "none"
        raise FormatError(f"layer {node.name!r} ({node.class_name}) holds {len(weights)} weight array(s); its config "
                          f"needs {len(expected)} ({names}); the file is corrupt")
    out = []
    for value, (what, shape) in zip(weights, expected):
        value = np.asarray(value)
        if tuple(value.shape) != tuple(shape):
            raise FormatError(f"layer {node.name!r} ({node.class_name}): {what} has shape {list(value.shape)}, its "
                              f"config needs {list(shape)}; the file is corrupt")
        if value.dtype.kind not in "fiu":
            raise FormatError(f"layer {node.name!r} ({node.class_name}): {what} is not numeric ({value.dtype})")
        out.append(np.ascontiguousarray(value, dtype=np.float32))
    return out


def activation_of(node: KerasNode, value: Any, builder: SpecBuilder) -> tuple[str | None, float | None]:
    """A Keras activation (a name, or Keras 3's ``{"class_name": "function", "config": name}``) as
    ``(modelkeep name or None, alpha)``."""
    if isinstance(value, dict):
        value = value.get("config") if value.get("class_name") == "function" else value.get("class_name")
    if value is None:
        return None, None
    name = _ACTIVATIONS.get(str(value).lower()) if isinstance(value, str) else None
    if isinstance(value, str) and str(value).lower() not in _ACTIVATIONS:
        name = "unknown"
    if name == "unknown" or (name == "hard_sigmoid" and builder.keras_version.startswith(("1.", "2."))):
        raise FormatError(f"layer {node.name!r} ({node.class_name}) uses the activation {str(value)[:40]!r}, which "
                          f"modelkeep cannot import (Keras 2's hard_sigmoid differs from Keras 3's); supported: "
                          f"{', '.join(sorted(_ACTIVATIONS))}")
    return name, (0.2 if name == "leaky_relu" else None)  # Keras 3's leaky_relu activation: slope 0.2


def finish(builder: SpecBuilder, node: KerasNode, kind: str, inputs: list[KTensor], *, moved: bool,
           params: dict[str, Any] | None = None, **fields: Any) -> KTensor:
    """Add ``kind`` with the node's ``activation``: in the layer where the spec can say it, else as a layer after."""
    act, alpha = activation_of(node, node.config.get("activation"), builder)
    inline = act is not None and alpha is None and not (act == "softmax" and moved)
    out = builder.add(kind, node.name, inputs, moved=moved, params=params, activation=act if inline else None,
                      **fields)
    if act is None or inline:
        return out
    if act == "softmax":  # Keras's softmax is over the channels: bring them back last
        out = builder.layout(out, False)
    return builder.add("Activation", f"{node.name}_activation", [out], moved=out.moved, function=act, alpha=alpha)


@converter("InputLayer")
def _input(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg = node.config
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape") or cfg.get("shape")
    if not isinstance(shape, list) or len(shape) < 2 or cfg.get("sparse") or cfg.get("ragged"):
        raise FormatError(f"input {node.name!r} has no valid shape ({shape!r:.60}); the file is corrupt")
    per_sample = shape[1:]
    if any(not isinstance(d, int) or d <= 0 for d in per_sample):
        raise FormatError(f"input {node.name!r} has shape {per_sample} with a variable (None) axis; modelkeep "
                          "models have fixed input shapes: rebuild the Keras model with a fixed Input shape")
    dtype = cfg.get("dtype", "float32")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name", "float32")
    spec_dtype = "int64" if str(dtype).startswith(("int", "uint")) else "float32"
    return builder.add("Input", node.name, [], shape=list(per_sample), dtype=spec_dtype)


@converter("Dense")
def _dense(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg = node.config
    x = builder.layout(inputs[0], False)
    n_in, units, bias = builder.keras_shape(x)[-1], int(cfg["units"]), bool(cfg.get("use_bias", True))
    expected = [("kernel", (n_in, units))] + ([("bias", (units,))] if bias else [])
    got = arrays(node, weights, expected)
    params = {"weight": got[0].T.copy()}
    if bias:
        params["bias"] = got[1]
    return finish(builder, node, "Dense", [x], moved=False, params=params, units=units, use_bias=bias)


@converter("Flatten")
def _flatten(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    if node.config.get("data_format") == "channels_first" and len(builder.keras_shape(inputs[0])) > 1:
        raise FormatError(f"layer {node.name!r} (Flatten) has data_format='channels_first'; not supported")
    return builder.add("Flatten", node.name, [builder.layout(inputs[0], False)])


@converter("Reshape")
def _reshape(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    target = node.config.get("target_shape")
    if not isinstance(target, list) or not all(isinstance(d, int) for d in target):
        raise FormatError(f"layer {node.name!r} (Reshape) has no valid target_shape; the file is corrupt")
    return builder.add("Reshape", node.name, [builder.layout(inputs[0], False)], shape=target)


@converter("Permute")
def _permute(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    dims = node.config.get("dims")
    if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
        raise FormatError(f"layer {node.name!r} (Permute) has no valid dims; the file is corrupt")
    return builder.add("Permute", node.name, [builder.layout(inputs[0], False)], dims=[d - 1 for d in dims])


@converter("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
def _dropout(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    rate = float(node.config.get("rate", 0.0))
    return builder.add("Dropout", node.name, inputs, moved=inputs[0].moved, rate=min(max(rate, 0.0), 0.999))


@converter("GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")
def _identity(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor | None:
    return None  # the identity at inference: the next layer reads this layer's input


def _elementwise(builder: SpecBuilder, node: KerasNode, x: KTensor, function: str | None,
                 alpha: float | None = None) -> KTensor:
    if function is None:
        return builder.add("Dropout", node.name, [x], moved=x.moved, rate=0.0)  # keep the layer's name
    if function == "softmax":
        x = builder.layout(x, False)
    return builder.add("Activation", node.name, [x], moved=x.moved, function=function, alpha=alpha)


@converter("Activation")
def _activation(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    act, alpha = activation_of(node, node.config.get("activation"), builder)
    return _elementwise(builder, node, inputs[0], act, alpha)


@converter("ReLU")
def _relu(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg = node.config
    top, slope = cfg.get("max_value"), float(cfg.get("negative_slope") or 0.0)
    if float(cfg.get("threshold") or 0.0) != 0.0 or (top is not None and (float(top) != 6.0 or slope)):
        raise FormatError(f"layer {node.name!r} (ReLU) has threshold/max_value settings modelkeep cannot express "
                          "(supported: plain ReLU, max_value=6, or a negative_slope)")
    if top is not None:
        return _elementwise(builder, node, inputs[0], "relu6")
    if slope:
        return _elementwise(builder, node, inputs[0], "leaky_relu", slope)
    return _elementwise(builder, node, inputs[0], "relu")


@converter("LeakyReLU")
def _leaky_relu(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    slope = node.config.get("negative_slope", node.config.get("alpha", 0.3))
    return _elementwise(builder, node, inputs[0], "leaky_relu", float(slope))


@converter("ELU")
def _elu(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    return _elementwise(builder, node, inputs[0], "elu", float(node.config.get("alpha", 1.0)))


@converter("Softmax")
def _softmax(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    axis = node.config.get("axis", -1)
    if axis not in (-1, [-1], len(builder.keras_shape(inputs[0]))):
        raise FormatError(f"layer {node.name!r} (Softmax) is over axis {axis}; modelkeep's is over the last axis")
    return _elementwise(builder, node, inputs[0], "softmax")


@converter("Embedding")
def _embedding(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg = node.config
    if cfg.get("mask_zero"):
        raise FormatError(f"layer {node.name!r} (Embedding) has mask_zero=True: Keras then skips padded steps in "
                          "later layers, which modelkeep's layers do not; save the model with mask_zero=False")
    vocab, dim = int(cfg["input_dim"]), int(cfg["output_dim"])
    (table,) = arrays(node, weights, [("embeddings", (vocab, dim))])
    builder.set_input_dtype(inputs[0], "int64")
    return builder.add("Embedding", node.name, [inputs[0]], params={"weight": table},
                       num_embeddings=vocab, embedding_dim=dim)


@converter("BatchNormalization")
def _batch_norm(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg = node.config
    if cfg.get("renorm"):
        raise FormatError(f"layer {node.name!r} (BatchNormalization) uses renorm; modelkeep cannot import it")
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    rank = len(builder.keras_shape(inputs[0]))
    if not isinstance(axis, int) or (axis + rank + 1 if axis < 0 else axis) not in (1, rank):
        raise FormatError(f"layer {node.name!r} (BatchNormalization) normalises axis {axis}; modelkeep normalises "
                          "the channel axis (the last, or the first after the batch)")
    last = (axis + rank + 1 if axis < 0 else axis) == rank
    x = builder.layout(inputs[0], last and rank > 1)
    if rank > 3:
        raise FormatError(f"layer {node.name!r} (BatchNormalization) on {rank}-axis samples is not supported")
    c = builder.shapes[x.layer][0]
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    expected = ([("gamma", (c,))] if scale else []) + ([("beta", (c,))] if center else [])
    got = arrays(node, weights, expected + [("moving_mean", (c,)), ("moving_variance", (c,))])
    gamma = got.pop(0) if scale else np.ones(c, np.float32)
    beta = got.pop(0) if center else np.zeros(c, np.float32)
    params = {"weight": gamma, "bias": beta, "running_mean": got[0], "running_var": got[1],
              "num_batches_tracked": np.array(0, dtype=np.int64)}
    momentum = min(max(1.0 - float(cfg.get("momentum", 0.99)), 0.0), 1.0)
    kind = "BatchNorm2D" if rank == 3 else "BatchNorm1D"
    return builder.add(kind, node.name, [x], moved=x.moved, params=params, momentum=momentum,
                       epsilon=float(cfg.get("epsilon", 1e-3)))



def _per_feature(values: np.ndarray) -> float | list[float]:
    flat = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    return flat[0] if len(flat) == 1 else flat


@converter("Rescaling")
def _rescaling(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    scale = np.asarray(node.config.get("scale", 1.0), dtype=np.float64)
    offset = np.asarray(node.config.get("offset", 0.0), dtype=np.float64)
    x = inputs[0] if scale.size == 1 and offset.size == 1 else builder.layout(inputs[0], False)
    return builder.add("Rescaling", node.name, [x], moved=x.moved, scale=_per_feature(scale),
                       offset=_per_feature(offset))


@converter("Normalization")
def _normalization(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    """Keras's adapted ``Normalization``: ``(x - mean) / max(sqrt(variance), 1e-7)`` over the last axis."""
    cfg = node.config
    rank = len(builder.keras_shape(inputs[0]))
    if cfg.get("axis", -1) not in (-1, [-1], rank, [rank]) or cfg.get("invert"):
        raise FormatError(f"layer {node.name!r} (Normalization) with axis={cfg.get('axis')!r:.20} or invert=True is "
                          "not supported (only the last axis, forwards)")
    x = builder.layout(inputs[0], False)
    c = builder.keras_shape(x)[-1]
    if cfg.get("mean") is not None and cfg.get("variance") is not None:
        mean, variance = np.asarray(cfg["mean"], np.float64), np.asarray(cfg["variance"], np.float64)
    elif len(weights) == 3:
        mean, variance = np.asarray(weights[0], np.float64), np.asarray(weights[1], np.float64)
    else:
        raise FormatError(f"layer {node.name!r} (Normalization) holds no mean and variance; the file is corrupt")
    if mean.size not in (1, c) or variance.size not in (1, c) or np.any(variance < 0):
        raise FormatError(f"layer {node.name!r} (Normalization) has {mean.size} means and {variance.size} "
                          f"variances for {c} features, or a negative variance; the file is corrupt")
    scale = 1.0 / np.maximum(np.sqrt(variance.reshape(-1)), 1e-7)
    return builder.add("Rescaling", node.name, [x], scale=_per_feature(scale),
                       offset=_per_feature(-mean.reshape(-1) * scale))


@converter("TimeDistributed")
def _time_distributed(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    inner = node.config.get("layer")
    if not isinstance(inner, dict) or inner.get("class_name") != "Dense" or not isinstance(inner.get("config"), dict):
        raise FormatError(f"layer {node.name!r} (TimeDistributed) wraps "
                          f"{str((inner or {}).get('class_name'))[:40]!r}; modelkeep imports TimeDistributed(Dense)")
    return _dense(builder, KerasNode(node.name, "Dense", inner["config"], node.inputs), inputs, weights)


@converter("LayerNormalization")
def _layer_norm(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg = node.config
    axis = cfg.get("axis", -1)
    x = builder.layout(inputs[0], False)
    rank = len(builder.keras_shape(x))
    if axis not in (-1, [-1], rank, [rank]) or cfg.get("rms_scaling"):
        raise FormatError(f"layer {node.name!r} (LayerNormalization) over axis {axis!r:.20} (or with rms_scaling) is "
                          "not supported; modelkeep's LayerNorm normalises the last axis")
    c = builder.keras_shape(x)[-1]
    scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
    got = arrays(node, weights, ([("gamma", (c,))] if scale else []) + ([("beta", (c,))] if center else []))
    params = {}
    if scale or center:
        params["weight"] = got[0] if scale else np.ones(c, np.float32)
        if center:
            params["bias"] = got[-1]
    return builder.add("LayerNorm", node.name, [x], params=params, epsilon=float(cfg.get("epsilon", 1e-3)),
                       elementwise_affine=scale or center, use_bias=center)

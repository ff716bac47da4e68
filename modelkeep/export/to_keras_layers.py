"""Spec layers as Keras 3 layers: one converter per layer kind, giving Keras configs and weights in Keras's layout.

A converter turns one spec layer into one or more Keras layers (a convolution
with integer padding becomes ``ZeroPadding2D`` then ``Conv2D``; a stacked LSTM
one Keras ``LSTM`` per layer) and returns the name of the Keras layer whose
output is the spec layer's output. Weights are NumPy arrays in the order and
shapes Keras keeps them: Dense kernels ``(in, out)``, convolution kernels
``(*window, in/groups, out)``, LSTM gates ``i, f, c, o`` with one bias, GRU
gates ``z, r, h`` with ``reset_after`` biases ``(2, 3*units)``.

Images stay channels first (``data_format="channels_first"``), so the exported
model takes the same arrays as the modelkeep model; ``Flatten`` is written with
``data_format="channels_last"``, which in Keras means "flatten as stored", the
element order of ``torch.flatten``. A kind without an exact Keras equivalent is
refused with ``FormatError`` naming the layer. This module never imports Keras.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..errors import FormatError
from ..spec.kinds import ACTIVATIONS, Shape
from ..spec.layers.activation import SHORTHANDS
from ..spec.model import Layer, ModelSpec

# spec activation (canonical name) -> the Keras activation string computing the same function
KERAS_ACTIVATIONS = {name: name for name in (
    "relu", "elu", "selu", "gelu", "sigmoid", "tanh", "softmax", "silu", "linear", "relu6", "hard_sigmoid",
    "hard_silu", "softplus", "softsign", "mish",
)}
_NON_NEGATIVE = {"relu", "relu6", "sigmoid", "softmax", "hard_sigmoid", "softplus"}  # zero padding = -inf padding
WeightGroup = tuple[str, str, list[np.ndarray]]  # (path under the layer's slot, group's "name" attribute, arrays)


@dataclass
class KerasLayer:
    """One Keras layer to write: its config fields, the Keras layers it reads, its output and weights."""

    class_name: str
    name: str
    config: dict[str, Any]
    inputs: list[str]
    shape: Shape  # per-sample output shape
    weights: list[WeightGroup] = field(default_factory=list)
    merge: bool = False  # called on a list of tensors (Add, Concatenate, Multiply)
    dtype: str = "float32"  # of its output


@dataclass(frozen=True)
class Step:
    """What a converter sees of one spec layer."""

    layer: Layer
    module: nn.Module | None  # the layer's torch module, without its activation
    sources: list[str]  # the Keras layers giving its inputs
    in_shapes: list[Shape]
    out_shape: Shape
    source_layers: list[Layer]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def fields(self) -> Any:
        return self.layer.kind.fields

    def refuse(self, why: str) -> FormatError:
        return FormatError(f"cannot export layer {self.name!r} ({self.layer.kind_name}) to Keras: {why}")


class KerasGraph:
    """The Keras layers of a model, in the order converters add them; names unique."""

    def __init__(self, spec: ModelSpec) -> None:
        self.layers: dict[str, KerasLayer] = {}
        self._spec_names = {layer.name for layer in spec.layers}

    def extra_name(self, base: str, suffix: str) -> str:
        """A fresh name for a Keras layer a spec layer needs besides its own (``conv1_pad``)."""
        name, count = f"{base}_{suffix}", 1
        while name in self.layers or name in self._spec_names:
            count += 1
            name = f"{base}_{suffix}{count}"
        return name

    def add(self, step: Step, class_name: str, config: dict[str, Any], *, name: str | None = None,
            sources: list[str] | None = None, shape: Shape | None = None, weights: list[np.ndarray] | None = None,
            groups: list[WeightGroup] | None = None, merge: bool = False) -> str:
        name = name or step.name
        if groups is None:
            groups = [("vars", name, list(weights or []))]
        config = {"name": name, "trainable": step.layer.trainable, "dtype": dtype_policy(), **config}
        self.layers[name] = KerasLayer(class_name, name, config, list(step.sources if sources is None else sources),
                                       tuple(step.out_shape if shape is None else shape), groups, merge)
        return name


def dtype_policy() -> dict[str, Any]:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).numpy().copy()


CONVERTERS: dict[str, Callable[[Step, KerasGraph], str]] = {}


def converts(*kinds: str) -> Callable[[Callable[[Step, KerasGraph], str]], Callable[[Step, KerasGraph], str]]:
    def register(function: Callable[[Step, KerasGraph], str]) -> Callable[[Step, KerasGraph], str]:
        for kind in kinds:
            CONVERTERS[kind] = function
        return function
    return register


# --------------------------------------------------------------------------- activations

def activation_parts(step: Step, function: str | None, alpha: float | None) -> tuple[str, tuple[str, dict] | None]:
    """``(inline Keras activation, None)``, or ``("linear", (layer class, config))`` for one that needs a layer."""
    if function is None:
        return "linear", None
    canonical = ACTIVATIONS.canonical(function)
    if canonical == "leaky_relu":  # Keras's "leaky_relu" string has slope 0.2, PyTorch's 0.01
        return "linear", ("LeakyReLU", {"negative_slope": 0.01 if alpha is None else alpha})
    if canonical == "elu" and alpha not in (None, 1.0):
        return "linear", ("ELU", {"alpha": alpha})
    if canonical not in KERAS_ACTIVATIONS:
        raise step.refuse(f"Keras has no activation computing {function!r} exactly"
                          + (" (its gelu is the exact erf form)" if canonical == "gelu_tanh" else ""))
    return KERAS_ACTIVATIONS[canonical], None


def then_activation(graph: KerasGraph, step: Step, name: str, after: tuple[str, dict] | None) -> str:
    """The layer ``activation_parts`` asked for after the Keras layer ``name``, if any; the name of the last one."""
    if after is None:
        return name
    return graph.add(step, after[0], after[1], name=graph.extra_name(step.name, "act"), sources=[name])


@converts("Activation", *(kind for kind, _function, _aliases in SHORTHANDS))
def _activation(step: Step, graph: KerasGraph) -> str:
    inline, after = activation_parts(step, step.layer.kind.final_activation(), getattr(step.fields, "alpha", None))
    class_name, config = after or ("Activation", {"activation": inline})
    return graph.add(step, class_name, config)


# --------------------------------------------------------------------------- core

@converts("Input")
def _input(step: Step, graph: KerasGraph) -> str:
    shape = list(step.fields.shape)
    config = {"batch_shape": [None, *shape], "dtype": step.fields.dtype, "sparse": False, "ragged": False,
              "name": step.name, "optional": False}
    graph.layers[step.name] = KerasLayer("InputLayer", step.name, config, [], tuple(shape),
                                         [("vars", step.name, [])], dtype=step.fields.dtype)
    return step.name


@converts("Dense")
def _dense(step: Step, graph: KerasGraph) -> str:
    f = step.fields
    if f.tied_to:
        raise step.refuse(f"its weight is tied to the Embedding {f.tied_to!r} and Keras layers do not share "
                          "weights; give the head its own weight first (reset_head) and export again")
    inline, after = activation_parts(step, f.activation, None)
    linear = step.module
    weights = [array(linear.weight).T] + ([array(linear.bias)] if f.use_bias else [])
    name = graph.add(step, "Dense", {"units": f.units, "activation": inline, "use_bias": f.use_bias},
                     weights=weights)
    return then_activation(graph, step, name, after)


@converts("Flatten")
def _flatten(step: Step, graph: KerasGraph) -> str:
    # Keras's channels_first Flatten moves channels last first; channels_last flattens as stored, like torch
    return graph.add(step, "Flatten", {"data_format": "channels_last"})


@converts("Reshape")
def _reshape(step: Step, graph: KerasGraph) -> str:
    return graph.add(step, "Reshape", {"target_shape": list(step.out_shape)})


@converts("Permute")
def _permute(step: Step, graph: KerasGraph) -> str:
    return graph.add(step, "Permute", {"dims": [d + 1 for d in step.fields.dims]})  # Keras counts the batch axis


@converts("Dropout")
def _dropout(step: Step, graph: KerasGraph) -> str:
    return graph.add(step, "Dropout", {"rate": step.fields.rate, "seed": None, "noise_shape": None})


@converts("Embedding")
def _embedding(step: Step, graph: KerasGraph) -> str:
    f = step.fields
    config = {"input_dim": f.num_embeddings, "output_dim": f.embedding_dim, "mask_zero": False}
    return graph.add(step, "Embedding", config, weights=[array(step.module.weight)])


# --------------------------------------------------------------------------- merging

@converts("Add")
def _add(step: Step, graph: KerasGraph) -> str:
    return graph.add(step, "Add", {}, merge=True)


@converts("Concatenate")
def _concatenate(step: Step, graph: KerasGraph) -> str:
    axis = step.layer.kind.axis(len(step.out_shape)) + 1  # Keras counts the batch axis
    return graph.add(step, "Concatenate", {"axis": axis}, merge=True)


@converts("Multiply")
def _multiply(step: Step, graph: KerasGraph) -> str:
    # modelkeep aligns inputs on the channel axis ((C,) is (C, 1, 1)); Keras broadcasts from the last axis,
    # so a shorter input is first reshaped to the full rank with trailing 1s
    rank = len(step.out_shape)
    sources = []
    for source, shape in zip(step.sources, step.in_shapes):
        if len(shape) < rank:
            target = [*shape, *(1,) * (rank - len(shape))]
            source = graph.add(step, "Reshape", {"target_shape": target}, name=graph.extra_name(step.name, "expand"),
                               sources=[source], shape=tuple(target))
        sources.append(source)
    return graph.add(step, "Multiply", {}, sources=sources, merge=True)


# --------------------------------------------------------------------------- normalisation

@converts("BatchNorm1D", "BatchNorm2D")
def _batch_norm(step: Step, graph: KerasGraph) -> str:
    f = step.fields
    if not f.track_running_stats:
        raise step.refuse("with track_running_stats=False it normalises by each batch's own statistics even when "
                          "predicting; Keras predicts with moving statistics")
    bn = step.module
    weights = [array(bn.weight), array(bn.bias)] if f.affine else []
    weights += [array(bn.running_mean), array(bn.running_var)]
    config = {"axis": 1, "momentum": 1.0 - f.momentum, "epsilon": f.epsilon, "center": f.affine, "scale": f.affine}
    return graph.add(step, "BatchNormalization", config, weights=weights)


@converts("LayerNorm")
def _layer_norm(step: Step, graph: KerasGraph) -> str:
    f = step.fields
    norm = step.module
    scale = f.elementwise_affine
    center = scale and f.use_bias
    weights = ([array(norm.weight)] if scale else []) + ([array(norm.bias)] if center else [])
    config = {"axis": [-1], "epsilon": f.epsilon, "center": center, "scale": scale, "rms_scaling": False}
    return graph.add(step, "LayerNormalization", config, weights=weights)


# the convolutions, pooling and recurrent layers register themselves in to_keras_spatial / to_keras_recurrent
def non_negative(step: Step) -> bool:
    """Whether the (single) input of ``step`` is known to be >= 0: it ends with relu, sigmoid, softmax, ..."""
    if len(step.source_layers) != 1:
        return False
    return step.source_layers[0].kind.final_activation() in _NON_NEGATIVE

"""LSTM and GRU as Keras 3 layers: one Keras layer per stacked layer, ``Bidirectional`` for two directions.

PyTorch keeps per layer and direction ``weight_ih`` ``(gates*H, in)``, ``weight_hh``
``(gates*H, H)`` and two biases. Keras keeps ``kernel`` ``(in, gates*H)``,
``recurrent_kernel`` ``(H, gates*H)`` and, for an LSTM, one bias (the sum of
PyTorch's two; the gate order ``i, f, g, o`` is Keras's ``i, f, c, o``). A Keras
GRU with ``reset_after=True`` (its default) computes PyTorch's GRU exactly,
with gates ``z, r, h`` where PyTorch has ``r, z, n`` and a bias ``(2, 3*H)``:
the input bias, then the recurrent one. Dropout between stacked layers only
acts in training and is not exported.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .to_keras_layers import KerasGraph, Step, WeightGroup, converts, array


def _lstm_weights(module: torch.nn.Module, suffix: str, bias: bool) -> list[np.ndarray]:
    weights = [array(getattr(module, f"weight_ih{suffix}")).T, array(getattr(module, f"weight_hh{suffix}")).T]
    if bias:
        weights.append(array(getattr(module, f"bias_ih{suffix}")) + array(getattr(module, f"bias_hh{suffix}")))
    return weights


def _gru_weights(module: torch.nn.Module, suffix: str, bias: bool) -> list[np.ndarray]:
    units = module.hidden_size
    order = np.r_[units:2 * units, 0:units, 2 * units:3 * units]  # PyTorch r, z, n -> Keras z, r, h
    weights = [array(getattr(module, f"weight_ih{suffix}"))[order].T,
               array(getattr(module, f"weight_hh{suffix}"))[order].T]
    if bias:
        weights.append(np.stack([array(getattr(module, f"bias_ih{suffix}"))[order],
                                 array(getattr(module, f"bias_hh{suffix}"))[order]]))
    return weights


def _cell_config(kind: str, name: str, step: Step, return_sequences: bool, backwards: bool) -> dict[str, Any]:
    f = step.fields
    config: dict[str, Any] = {
        "name": name, "trainable": step.layer.trainable, "return_sequences": return_sequences,
        "return_state": False, "go_backwards": backwards, "stateful": False, "unroll": False,
        "zero_output_for_mask": False, "units": f.units, "activation": "tanh", "recurrent_activation": "sigmoid",
        "use_bias": f.use_bias, "dropout": 0.0, "recurrent_dropout": 0.0, "seed": None,
    }
    if kind == "LSTM":
        config["unit_forget_bias"] = True
    else:
        config["reset_after"] = True
    return config


def _bidirectional(kind: str, name: str, step: Step, sequences: bool, weights: list[list[np.ndarray]],
                   in_shape: tuple[int, ...]) -> tuple[dict[str, Any], list[WeightGroup]]:
    cell = f"{kind.lower()}_cell"
    inner: dict[str, Any] = {}
    groups: list[WeightGroup] = []
    for direction, backwards, arrays in (("forward", False, weights[0]), ("backward", True, weights[1])):
        inner_name = f"{direction}_{name}"
        inner[direction] = {"module": "keras.layers", "class_name": kind, "registered_name": None,
                            "config": _cell_config(kind, inner_name, step, sequences, backwards),
                            "build_config": {"input_shape": [None, *in_shape]}}
        groups += [(f"{direction}_layer/cell/vars", cell, arrays), (f"{direction}_layer/vars", inner_name, [])]
    config = {"merge_mode": "concat", "layer": inner["forward"], "backward_layer": inner["backward"]}
    return config, groups + [("vars", name, [])]


@converts("LSTM", "GRU")
def _recurrent(step: Step, graph: KerasGraph) -> str:
    kind, f = step.layer.kind_name, step.fields
    module = step.module
    take = _lstm_weights if kind == "LSTM" else _gru_weights
    source, in_shape = step.sources[0], tuple(step.in_shapes[0])
    steps, width = in_shape[0], f.units * (2 if f.bidirectional else 1)
    for index in range(f.num_layers):
        last = index == f.num_layers - 1
        sequences = f.return_sequences or not last
        name = step.name if last else graph.extra_name(step.name, f"layer{index + 1}")
        shape = (steps, width) if sequences else (width,)
        forward = take(module, f"_l{index}", f.use_bias)
        if f.bidirectional:
            backward = take(module, f"_l{index}_reverse", f.use_bias)
            config, groups = _bidirectional(kind, name, step, sequences, [forward, backward], in_shape)
            source = graph.add(step, "Bidirectional", config, name=name, sources=[source], shape=shape,
                               groups=groups)
        else:
            config = _cell_config(kind, name, step, sequences, False)
            del config["name"], config["trainable"]
            groups = [("cell/vars", f"{kind.lower()}_cell", forward), ("vars", name, [])]
            source = graph.add(step, kind, config, name=name, sources=[source], shape=shape, groups=groups)
        in_shape = (steps, width)
    return source

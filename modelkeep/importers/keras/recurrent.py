"""Keras LSTM and GRU (and their ``Bidirectional`` wrapper) -> the spec's PyTorch-layout recurrent layers.

Keras keeps one kernel ``(in, gates*h)``, one recurrent kernel ``(h, gates*h)``
and biases; PyTorch keeps ``weight_ih (gates*h, in)``, ``weight_hh`` and two
biases. Gate order: Keras's LSTM ``i, f, c, o`` is PyTorch's ``i, f, g, o``;
Keras's GRU ``z, r, h`` is PyTorch's ``r, z, n``. Keras's LSTM has one bias
(PyTorch's ``b_hh`` is then zero); its GRU with ``reset_after=True`` (the
default) has two rows, exactly PyTorch's ``b_ih`` and ``b_hh``.
``reset_after=False`` applies the reset gate before the recurrent matrix,
which PyTorch's GRU cannot express, so it is refused.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import FormatError
from .config import KerasNode
from .builder import KTensor, SpecBuilder, converter
from .layers import activation_of, arrays


def _check(node: KerasNode, cfg: dict[str, Any], builder: SpecBuilder, *, backward: bool = False) -> None:
    where = f"layer {node.name!r} ({node.class_name})"
    act = activation_of(node, cfg.get("activation", "tanh"), builder)[0]
    gate = activation_of(node, cfg.get("recurrent_activation", "sigmoid"), builder)[0]
    if act != "tanh" or gate != "sigmoid":
        raise FormatError(f"{where} uses activation={cfg.get('activation')!r:.20} and recurrent_activation="
                          f"{cfg.get('recurrent_activation')!r:.20}; modelkeep's recurrent layers are tanh/sigmoid")
    for key in ("stateful", "return_state", "time_major"):
        if cfg.get(key):
            raise FormatError(f"{where} has {key}=True; modelkeep cannot import that")
    if bool(cfg.get("go_backwards")) != backward:
        raise FormatError(f"{where} has go_backwards={cfg.get('go_backwards')}; use Bidirectional instead")


def _gru_order(array: np.ndarray) -> np.ndarray:
    """Keras's GRU gates ``z, r, h`` along the last axis, as PyTorch's ``r, z, n``."""
    z, r, h = np.split(array, 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


def _direction(node: KerasNode, cfg: dict[str, Any], weights: list[Any], n_in: int,
               suffix: str) -> dict[str, np.ndarray]:
    """One direction's tensors under PyTorch's names (``suffix``: ``""`` or ``"_reverse"``)."""
    h, bias, gru = int(cfg["units"]), bool(cfg.get("use_bias", True)), node_is_gru(cfg, node)
    g = 3 if gru else 4
    expected = [("kernel", (n_in, g * h)), ("recurrent_kernel", (h, g * h))]
    if bias:
        expected.append(("bias", (2, g * h) if gru else (g * h,)))
    got = arrays(node, weights, expected)
    order = _gru_order if gru else (lambda a: a)
    out = {f"weight_ih_l0{suffix}": order(got[0]).T.copy(), f"weight_hh_l0{suffix}": order(got[1]).T.copy()}
    if bias:
        b_ih, b_hh = (order(got[2][0]), order(got[2][1])) if gru else (got[2], np.zeros_like(got[2]))
        out[f"bias_ih_l0{suffix}"], out[f"bias_hh_l0{suffix}"] = b_ih, b_hh
    return out


def node_is_gru(cfg: dict[str, Any], node: KerasNode) -> bool:
    gru = cfg.get("_class") == "GRU"
    if gru and not cfg.get("reset_after", True):
        raise FormatError(f"layer {node.name!r} is a GRU with reset_after=False, which PyTorch's GRU cannot express "
                          "(it resets before the recurrent matrix); retrain with reset_after=True (Keras's default)")
    return gru


def _recurrent(builder: SpecBuilder, node: KerasNode, x: KTensor, layer: dict[str, Any],
               backward: dict[str, Any] | None, weights: list[Any]) -> KTensor:
    shape = builder.keras_shape(x)
    if len(shape) != 2:
        raise FormatError(f"layer {node.name!r} ({node.class_name}) reads {list(shape)}; expected (steps, features)")
    cfg = dict(layer["config"], _class=layer["class_name"])
    _check(node, cfg, builder)
    params = {}
    n = len(weights) // 2 if backward is not None else len(weights)
    params.update(_direction(node, cfg, weights[:n], shape[-1], ""))
    if backward is not None:
        bcfg = dict(backward["config"], _class=backward["class_name"])
        _check(node, bcfg, builder, backward=True)
        if (bcfg["_class"], bcfg.get("units"), bcfg.get("use_bias", True), bcfg.get("return_sequences")) != (
                cfg["_class"], cfg.get("units"), cfg.get("use_bias", True), cfg.get("return_sequences")):
            raise FormatError(f"layer {node.name!r} (Bidirectional) has a backward layer unlike its forward one")
        params.update(_direction(node, bcfg, weights[n:], shape[-1], "_reverse"))
    return builder.add(cfg["_class"], node.name, [x], params=params, units=int(cfg["units"]),
                       bidirectional=backward is not None, return_sequences=bool(cfg.get("return_sequences")),
                       use_bias=bool(cfg.get("use_bias", True)))


@converter("LSTM", "GRU")
def _lstm_gru(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    layer = {"class_name": node.class_name, "config": node.config}
    return _recurrent(builder, node, builder.layout(inputs[0], False), layer, None, weights)


@converter("Bidirectional")
def _bidirectional(builder: SpecBuilder, node: KerasNode, inputs: list[KTensor], weights: list[Any]) -> KTensor:
    cfg = node.config
    layer, backward = cfg.get("layer"), cfg.get("backward_layer")
    if not isinstance(layer, dict) or layer.get("class_name") not in ("LSTM", "GRU"):
        raise FormatError(f"layer {node.name!r} (Bidirectional) wraps {str((layer or {}).get('class_name'))[:40]!r}; "
                          "modelkeep imports Bidirectional LSTM and GRU")
    if cfg.get("merge_mode", "concat") != "concat":
        raise FormatError(f"layer {node.name!r} (Bidirectional) has merge_mode={cfg.get('merge_mode')!r:.20}; "
                          "modelkeep joins the directions by concatenation only")
    if backward is None:
        backward = {"class_name": layer["class_name"], "config": dict(layer["config"], go_backwards=True)}
    if not isinstance(backward, dict) or not isinstance(backward.get("config"), dict) or not isinstance(
            layer.get("config"), dict):
        raise FormatError(f"layer {node.name!r} (Bidirectional) has a malformed config; the file is corrupt")
    return _recurrent(builder, node, builder.layout(inputs[0], False), layer, backward, weights)

"""Applying a layer's initialisers (``kernel_initializer`` and friends) with ``torch.nn.init``.

Which tensor gets which initialiser: parameters whose name contains ``bias``
get ``bias_initializer``; recurrent weights (``weight_hh``) get
``recurrent_initializer`` (falling back to ``kernel_initializer``); every other
weight of two or more axes gets ``kernel_initializer``. Normalisation scales
and shifts (one axis) keep their ones and zeros. Tensors on the meta device
are skipped: there is nothing to fill.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..spec.initializers import check_initializer
from ..spec.kinds import LayerKind, initializers_of


def initialize(tensor: torch.Tensor, spec: Any) -> None:
    """Fill ``tensor`` in place according to an initialiser spec (a name or ``{"name": ..., **args}``)."""
    name, args = check_initializer(spec)
    init = nn.init
    with torch.no_grad():
        if name == "zeros":
            init.zeros_(tensor)
        elif name == "ones":
            init.ones_(tensor)
        elif name == "constant":
            init.constant_(tensor, args["value"])
        elif name == "normal":
            init.normal_(tensor, args["mean"], args["std"])
        elif name == "standard_normal":
            init.normal_(tensor, 0.0, 1.0)
        elif name == "truncated_normal":
            init.trunc_normal_(tensor, args["mean"], args["std"], args["mean"] + args["low"] * args["std"],
                               args["mean"] + args["high"] * args["std"])
        elif name == "uniform":
            init.uniform_(tensor, args["low"], args["high"])
        elif name in ("glorot_normal", "glorot_uniform", "orthogonal", "he_normal", "he_uniform") and tensor.dim() < 2:
            raise ValueError(f"initializer {name!r} needs a tensor of two or more axes; use it as a kernel initializer")
        elif name == "glorot_normal":
            init.xavier_normal_(tensor, args["gain"])
        elif name == "glorot_uniform":
            init.xavier_uniform_(tensor, args["gain"])
        elif name == "he_normal":
            init.kaiming_normal_(tensor, a=args["a"], mode=args["mode"], nonlinearity=args["nonlinearity"])
        elif name == "he_uniform":
            init.kaiming_uniform_(tensor, a=args["a"], mode=args["mode"], nonlinearity=args["nonlinearity"])
        elif name == "orthogonal":
            init.orthogonal_(tensor, args["gain"])
        else:  # pragma: no cover - INITIALIZERS and this function are kept in step by the tests
            raise NotImplementedError(name)


def apply_initializers(module: nn.Module, kind: LayerKind) -> None:
    """Apply the initialisers ``kind`` names to the parameters of ``module`` (the layer it built)."""
    chosen = initializers_of(kind)
    if not chosen:
        return
    for name, param in module.named_parameters():
        if param.is_meta:
            continue
        if "bias" in name:
            spec = chosen.get("bias_initializer")
        elif "weight_hh" in name:
            spec = chosen.get("recurrent_initializer", chosen.get("kernel_initializer"))
        elif param.dim() >= 2:
            spec = chosen.get("kernel_initializer")
        else:
            spec = None
        if spec is not None:
            initialize(param, spec)


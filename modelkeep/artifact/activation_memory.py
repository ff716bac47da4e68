"""How much memory a forward pass of a spec-built network needs per input row, and how many rows fit a budget.

A spec knows every layer's output shape, so the activation memory of a batch
is known before anything runs: a 1.5 KB file whose adaptive pooling layer
outputs 16000×16000 maps per row is refused here instead of exhausting the
machine. ``peak_bytes_per_row`` walks the layers in execution order, keeping
each output alive until its last consumer has run (the way autograd-free
inference frees them) and counting one temporary the size of the output being
computed. ``rows_per_batch`` turns that into the number of rows ``Model.predict``
runs at once. It never imports torch and never runs the network.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import DataError

#: Activation memory ``Model.predict`` may use at once, in bytes, unless given ``memory_budget=``.
DEFAULT_ACTIVATION_BUDGET = 1 << 30


def _gigabytes(n: float) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e7 else f"{n / 1e6:,.2f} MB"


def peak_bytes_per_row(spec: Any, element_bytes: int = 4) -> tuple[int, str | None]:
    """``(bytes, layer)``: the estimated peak activation memory of one row, and the layer where it peaks."""
    layers = list(spec.layers)
    last_use = {layer.name: i for i, layer in enumerate(layers)}
    for i, layer in enumerate(layers):
        for name in layer.inputs:
            last_use[name] = max(last_use.get(name, i), i)
    for name in spec.outputs:
        last_use[name] = len(layers)
    live, peak, where = 0, 0, None
    for i, layer in enumerate(layers):
        size = math.prod(spec.shapes[layer.name]) * element_bytes
        live += size
        if live + size > peak:  # the output, plus one temporary of its size while it is computed
            peak, where = live + size, layer.name
        for name in {*layer.inputs, layer.name}:
            if last_use.get(name) == i:
                live -= math.prod(spec.shapes[name]) * element_bytes
    return peak, where


def rows_per_batch(spec: Any, batch_size: int, budget: int | None, *, element_bytes: int = 4) -> int:
    """How many rows to run at once (at most ``batch_size``) so activations stay within ``budget`` bytes.

    ``DataError`` when even one row needs more than the budget, naming the layer and how to allow more.
    """
    budget = DEFAULT_ACTIVATION_BUDGET if budget is None else int(budget)
    per_row, layer = peak_bytes_per_row(spec, element_bytes)
    if per_row <= 0:
        return batch_size
    if per_row > budget:
        shape = list(spec.shapes[layer]) if layer is not None else []
        raise DataError(
            f"this model needs about {_gigabytes(per_row)} of activation memory for a single input row (layer "
            f"{str(layer)[:60]!r} outputs {shape} per row), more than the budget of {_gigabytes(budget)}; if you "
            "trust the file and have the memory, pass memory_budget=<bytes> to predict"
        )
    return max(1, min(batch_size, budget // per_row))


__all__ = ["DEFAULT_ACTIVATION_BUDGET", "peak_bytes_per_row", "rows_per_batch"]

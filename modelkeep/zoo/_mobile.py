"""Pieces shared by the mobile convolution families (MobileNetV2, EfficientNet).

``conv_norm_act`` is torchvision's ``Conv2dNormActivation``: a bias-free
convolution, batch norm and an optional activation, named ``<prefix>_0``,
``<prefix>_1``, ``<prefix>_2`` as torchvision's ``<prefix>.0/.1/.2``.
With ``padding="tf"`` a strided convolution is preceded by an explicit
zero padding of ``k - s`` rows and columns, the larger half at the bottom and
right: TensorFlow's "same" on even sizes, as Hugging Face's EfficientNet always
pads (and its ``tf_padding`` MobileNetV2 on even sizes, such as every strided
layer of a 224x224 input; on odd sizes TensorFlow pads symmetrically).
Otherwise padding is symmetric, ``k // 2``, as torchvision's.
"""
from __future__ import annotations

from typing import Any, Literal

CONV_INIT = {"name": "he_normal", "mode": "fan_out"}
Padding = Literal["symmetric", "tf"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Channels rounded to a multiple of ``divisor``, never more than 10% below ``value`` (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_norm_act(layers: list[dict[str, Any]], prefix: str, source: str, filters: int, kernel: int, *,
                  stride: int = 1, groups: int = 1, activation: str | None, epsilon: float,
                  padding: Padding = "symmetric") -> str:
    """Append convolution, batch norm and activation reading layer ``source``; return the last layer's name."""
    pad: Any = kernel // 2
    if padding == "tf" and stride > 1:
        total = max(kernel - stride, 0)
        before, after = total // 2, total - total // 2
        layers.append({"kind": "ZeroPadding2D", "name": f"{prefix}_pad", "inputs": [source],
                       "padding": [[before, after], [before, after]]})          # (C, H + total, W + total)
        source, pad = f"{prefix}_pad", 0
    layers += [
        {"kind": "Conv2D", "name": f"{prefix}_0", "inputs": [source], "filters": filters, "kernel_size": kernel,
         "stride": stride, "padding": pad, "groups": groups, "use_bias": False, "kernel_initializer": CONV_INIT},
        {"kind": "BatchNorm2D", "name": f"{prefix}_1", "epsilon": epsilon},               # (filters, H/s, W/s)
    ]
    if activation is None:
        return f"{prefix}_1"
    layers.append({"kind": "Activation", "name": f"{prefix}_2", "function": activation})
    return f"{prefix}_2"

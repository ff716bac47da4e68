"""EfficientNet-B0 (Tan and Le, 2019) in torchvision's layout: MBConv blocks with squeeze-and-excitation.

A 3x3/2 stem, seven stages of MBConv blocks (a 1x1 expansion by ``t`` unless
``t`` is 1, a ``k``x``k`` depthwise convolution, squeeze-and-excitation, a linear
1x1 projection; a residual ``Add`` where stride and channels are kept), a 1x1
convolution to ``4 * 320`` channels, global average pooling, dropout and one
Dense layer. SiLU throughout. Squeeze-and-excitation is global average pooling
to ``(E, 1, 1)``, two 1x1 convolutions (SiLU, then sigmoid) and a ``Multiply``
gating the ``E`` channels. Names follow torchvision's module paths with dots as
underscores (``features.2.0.block.2.fc1`` is ``features_2_0_block_2_fc1``), so
its weights map one to one. 5,288,548 parameters with 1000 classes.

Stochastic depth (torchvision's ``StochasticDepth``, Hugging Face's
``drop_connect_rate``) drops residual branches in training only; it is left
out: at inference it is the identity, so imported weights give the same outputs.
``width``/``depth`` are the compound-scaling multipliers (B1 is depth 1.1,
B2 width 1.1 and depth 1.2, ...); ``epsilon`` is batch norm's (torchvision's
B0-B4 use 1e-5, Hugging Face's and TensorFlow's checkpoints 1e-3);
``padding="tf"`` pads strided convolutions as Hugging Face's EfficientNet does.
"""
from __future__ import annotations

import math
from typing import Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ._base import register_model
from ._mobile import Padding, conv_norm_act, make_divisible

# (expansion t, kernel k, stride s, input channels, output channels, blocks n), the paper's Table 1
STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
SE_INIT = {"kernel_initializer": {"name": "he_normal", "mode": "fan_out"}, "bias_initializer": "zeros"}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EfficientNetConfig:
    num_classes: int = Field(default=1000, gt=0)
    input_shape: tuple[int, int, int] = (3, 224, 224)
    width: float = Field(default=1.0, gt=0.0)       # channel multiplier
    depth: float = Field(default=1.0, gt=0.0)       # block-count multiplier
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    epsilon: float = Field(default=1e-5, gt=0.0)    # batch norm
    padding: Padding = "symmetric"


def _squeeze_excite(layers: list[dict[str, Any]], p: str, x: str, channels: int, squeeze: int) -> str:
    """Append torchvision's ``SqueezeExcitation`` named ``p`` gating layer ``x``; return its output's name."""
    layers += [
        {"kind": "AdaptiveAvgPool2D", "name": f"{p}_avgpool", "inputs": [x], "output_size": 1},     # (E, 1, 1)
        {"kind": "Conv2D", "name": f"{p}_fc1", "filters": squeeze, "kernel_size": 1, **SE_INIT},     # (S, 1, 1)
        {"kind": "SiLU", "name": f"{p}_activation"},
        {"kind": "Conv2D", "name": f"{p}_fc2", "filters": channels, "kernel_size": 1, **SE_INIT},    # (E, 1, 1)
        {"kind": "Sigmoid", "name": f"{p}_scale_activation"},
        {"kind": "Multiply", "name": f"{p}_mul", "inputs": [x, f"{p}_scale_activation"]},          # (E, H, W)
    ]
    return f"{p}_mul"


def _mbconv(layers: list[dict[str, Any]], p: str, x: str, cin: int, cout: int, t: int, kernel: int, stride: int,
            cfg: EfficientNetConfig) -> str:
    """Append one MBConv block ``p`` (``features.<stage>.<index>``) reading ``x``; return its output's name."""
    expanded = make_divisible(cin * t)
    eps, part, y = cfg.epsilon, 0, x
    if expanded != cin:
        y = conv_norm_act(layers, f"{p}_block_0", y, expanded, 1, activation="silu", epsilon=eps)  # (E, H, W)
        part = 1
    y = conv_norm_act(layers, f"{p}_block_{part}", y, expanded, kernel, stride=stride, groups=expanded,
                      activation="silu", epsilon=eps, padding=cfg.padding)                         # (E, H/s, W/s)
    y = _squeeze_excite(layers, f"{p}_block_{part + 1}", y, expanded, max(1, cin // 4))
    y = conv_norm_act(layers, f"{p}_block_{part + 2}", y, cout, 1, activation=None, epsilon=eps)   # (cout, H/s, W/s)
    if stride == 1 and cin == cout:
        layers.append({"kind": "Add", "name": f"{p}_add", "inputs": [y, x]})                      # residual + x
        y = f"{p}_add"
    return y


def efficientnet(cfg: EfficientNetConfig) -> dict[str, Any]:
    channels = make_divisible(STAGES[0][3] * cfg.width)
    layers: list[dict[str, Any]] = [{"kind": "Input", "name": "image", "shape": list(cfg.input_shape)}]
    x = conv_norm_act(layers, "features_0", "image", channels, 3, stride=2, activation="silu",     # (32, 112, 112)
                      epsilon=cfg.epsilon, padding=cfg.padding)
    for stage, (t, kernel, stride, _cin, cout, count) in enumerate(STAGES, start=1):
        cout = make_divisible(cout * cfg.width)
        for index in range(int(math.ceil(count * cfg.depth))):
            x = _mbconv(layers, f"features_{stage}_{index}", x, channels, cout, t, kernel,
                        stride if index == 0 else 1, cfg)
            channels = cout                                                                        # (320, 7, 7) last
    last = 4 * channels
    conv_norm_act(layers, f"features_{len(STAGES) + 1}", x, last, 1, activation="silu", epsilon=cfg.epsilon)
    layers += [                                                                                    # (1280, 7, 7)
        {"kind": "GlobalAvgPool", "name": "avgpool"},                                              # (1280,)
        {"kind": "Dropout", "name": "classifier_0", "rate": cfg.dropout},
        {"kind": "Dense", "name": "classifier_1", "units": cfg.num_classes, "bias_initializer": "zeros",
         "kernel_initializer": {"name": "uniform", "low": -1 / math.sqrt(cfg.num_classes),
                                "high": 1 / math.sqrt(cfg.num_classes)}},                          # (num_classes,)
    ]
    return {"name": "efficientnet_b0", "layers": layers, "head": "classifier_1"}


register_model("efficientnet_b0", EfficientNetConfig, efficientnet,
               "EfficientNet-B0 (torchvision layout): 3x224x224 input, 1000 classes",
               small={"num_classes": 3, "input_shape": (3, 32, 32), "width": 0.5, "depth": 0.5})

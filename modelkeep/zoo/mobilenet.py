"""MobileNetV2 (Sandler et al., 2018) in torchvision's layout: inverted residual blocks.

A 3x3/2 stem convolution, seventeen inverted residual blocks (a 1x1
expansion by ``t``, a 3x3 depthwise convolution, a linear 1x1 projection; a
residual ``Add`` where the shape is kept), a 1x1 convolution to 1280
channels, global average pooling, dropout and one Dense layer. ReLU6
throughout. Names follow torchvision's module paths with dots as underscores
(``features.2.conv.1.0`` is ``features_2_conv_1_0``), so its weights map one to
one. 3,504,872 parameters with 1000 classes.

``width`` is the width multiplier (channels rounded to multiples of 8);
``epsilon`` is batch norm's (Hugging Face's checkpoints use 0.001);
``padding="tf"`` pads strided convolutions as TensorFlow does (Hugging Face's
``tf_padding=True``), see ``_mobile.py``.
"""
from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ._base import register_model
from ._mobile import CONV_INIT, Padding, conv_norm_act, make_divisible

# (expansion t, output channels c, blocks n, stride of the first block s), the paper's Table 2
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
DENSE_INIT = {"name": "normal", "mean": 0.0, "std": 0.01}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MobileNetV2Config:
    num_classes: int = Field(default=1000, gt=0)
    input_shape: tuple[int, int, int] = (3, 224, 224)
    width: float = Field(default=1.0, gt=0.0)       # width multiplier
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    epsilon: float = Field(default=1e-5, gt=0.0)    # batch norm
    padding: Padding = "symmetric"


def _inverted_residual(layers: list[dict[str, Any]], p: str, x: str, cin: int, cout: int, stride: int, t: int,
                       cfg: MobileNetV2Config) -> str:
    """Append one block ``features.<i>`` reading layer ``x``; return the name of its output."""
    hidden = int(round(cin * t))
    eps, index, y = cfg.epsilon, 0, x
    if t != 1:
        y = conv_norm_act(layers, f"{p}_conv_0", y, hidden, 1, activation="relu6", epsilon=eps)     # (hidden, H, W)
        index = 1
    y = conv_norm_act(layers, f"{p}_conv_{index}", y, hidden, 3, stride=stride, groups=hidden,      # depthwise
                      activation="relu6", epsilon=eps, padding=cfg.padding)                        # (hidden, H/s, W/s)
    layers += [
        {"kind": "Conv2D", "name": f"{p}_conv_{index + 1}", "inputs": [y], "filters": cout, "kernel_size": 1,
         "use_bias": False, "kernel_initializer": CONV_INIT},                                      # (cout, H/s, W/s)
        {"kind": "BatchNorm2D", "name": f"{p}_conv_{index + 2}", "epsilon": eps},
    ]
    out = f"{p}_conv_{index + 2}"
    if stride == 1 and cin == cout:
        layers.append({"kind": "Add", "name": f"{p}_add", "inputs": [out, x]})                   # residual + x
        out = f"{p}_add"
    return out


def mobilenet_v2(cfg: MobileNetV2Config) -> dict[str, Any]:
    channels = make_divisible(32 * cfg.width)
    last = make_divisible(1280 * max(1.0, cfg.width))
    layers: list[dict[str, Any]] = [{"kind": "Input", "name": "image", "shape": list(cfg.input_shape)}]
    x = conv_norm_act(layers, "features_0", "image", channels, 3, stride=2, activation="relu6",     # (32, 112, 112)
                      epsilon=cfg.epsilon, padding=cfg.padding)
    index = 1
    for t, c, n, s in SETTINGS:
        cout = make_divisible(c * cfg.width)
        for block in range(n):
            x = _inverted_residual(layers, f"features_{index}", x, channels, cout, s if block == 0 else 1, t, cfg)
            channels, index = cout, index + 1                                                      # (320, 7, 7) last
    conv_norm_act(layers, f"features_{index}", x, last, 1, activation="relu6", epsilon=cfg.epsilon)  # (1280, 7, 7)
    layers += [
        {"kind": "GlobalAvgPool", "name": "avgpool"},                                              # (1280,)
        {"kind": "Dropout", "name": "classifier_0", "rate": cfg.dropout},
        {"kind": "Dense", "name": "classifier_1", "units": cfg.num_classes, "kernel_initializer": DENSE_INIT,
         "bias_initializer": "zeros"},                                                              # (num_classes,)
    ]
    return {"name": "mobilenet_v2", "layers": layers, "head": "classifier_1"}


register_model("mobilenet_v2", MobileNetV2Config, mobilenet_v2,
               "MobileNetV2 (torchvision layout): 3x224x224 input, 1000 classes",
               small={"num_classes": 3, "input_shape": (3, 32, 32), "width": 0.25})

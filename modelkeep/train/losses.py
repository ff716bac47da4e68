"""Losses by name.

Each loss is built knowing whether the model ends in a softmax/sigmoid (it then
outputs probabilities) or in raw logits, so that cross-entropy is computed the
numerically stable way whenever it can be.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .._registry import Registry
from ..errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Callable[[str | None], LossFn]] = Registry("loss", ConfigError)


@LOSSES.register("categorical_crossentropy", aliases=("cross_entropy", "crossentropy"))
def categorical_crossentropy(final_activation: str | None) -> LossFn:
    """Cross-entropy against class indices (int64), from logits or from softmax probabilities."""
    if final_activation == "softmax":
        return lambda probs, target: F.nll_loss(torch.log(probs.clamp_min(1e-12)), target)
    return lambda logits, target: F.cross_entropy(logits, target)


@LOSSES.register("mse", aliases=("mean_squared_error",))
def mse(final_activation: str | None) -> LossFn:
    """Mean squared error; class-index targets are one-hot encoded first."""

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dtype == torch.int64 and output.ndim == 2:
            target = F.one_hot(target, output.shape[1]).to(output.dtype)
        return F.mse_loss(output, target.reshape(output.shape).to(output.dtype))

    return loss


def make_loss(name: str, final_activation: str | None = None) -> LossFn:
    return LOSSES.get(name)(final_activation)

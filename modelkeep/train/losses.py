"""Losses by name: MSE, RMSE, MAE, Huber, binary and categorical cross-entropy (with label smoothing).

Each loss is built knowing whether the model ends in a softmax/sigmoid (it then
outputs probabilities) or in raw logits, so that cross-entropy is computed the
numerically stable way whenever it can be. Targets may be class indices
(int64), one-hot or probability rows (float), or regression values.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .._registry import Registry
from ..errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Callable[..., LossFn]] = Registry("loss", ConfigError)

_EPS = 1e-7


def _check_smoothing(label_smoothing: float) -> float:
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return float(label_smoothing)


@LOSSES.register("categorical_crossentropy", aliases=("cross_entropy", "crossentropy", "categorical_cross_entropy"))
def categorical_crossentropy(final_activation: str | None, *, label_smoothing: float = 0.0) -> LossFn:
    """Cross-entropy against class indices (int64) or probability rows, from logits or softmax probabilities.

    ``label_smoothing`` mixes the target with the uniform distribution, as ``torch.nn.CrossEntropyLoss`` does.
    """
    smoothing = _check_smoothing(label_smoothing)
    if final_activation == "softmax":
        def from_probabilities(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            log_probs = torch.log(probs.clamp_min(1e-12))
            if not target.is_floating_point() and smoothing == 0.0:
                return F.nll_loss(log_probs, target)
            classes = probs.shape[-1]
            if not target.is_floating_point():
                target = F.one_hot(target, classes).to(log_probs.dtype)
            if smoothing:
                target = target * (1 - smoothing) + smoothing / classes
            return -(target * log_probs).sum(dim=-1).mean()

        return from_probabilities

    def from_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim == 3 and not target.is_floating_point() and target.ndim == 2:  # (B, T, V) per token
            logits, target = logits.flatten(0, 1), target.flatten()
        return F.cross_entropy(logits, target, label_smoothing=smoothing)

    return from_logits


@LOSSES.register("binary_crossentropy", aliases=("bce", "binary_cross_entropy"))
def binary_crossentropy(final_activation: str | None, *, label_smoothing: float = 0.0) -> LossFn:
    """Binary cross-entropy for one output column (logit or sigmoid probability) against 0/1 targets.

    With label smoothing ``s`` the targets become ``t(1-s) + s/2``. Multi-column outputs are
    treated as independent binary labels (multi-label classification).
    """
    smoothing = _check_smoothing(label_smoothing)

    def targets_like(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.reshape(output.shape).to(output.dtype)
        return target * (1 - smoothing) + 0.5 * smoothing if smoothing else target

    if final_activation in ("sigmoid", "softmax"):
        return lambda probs, target: F.binary_cross_entropy(probs.clamp(_EPS, 1 - _EPS), targets_like(probs, target))
    return lambda logits, target: F.binary_cross_entropy_with_logits(logits, targets_like(logits, target))


def _regression_target(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class indices become one-hot rows (so MSE can train a classifier); values take the output's shape."""
    if not target.is_floating_point() and output.ndim == 2 and output.shape[1] > 1:
        return F.one_hot(target, output.shape[1]).to(output.dtype)
    return target.reshape(output.shape).to(output.dtype)


@LOSSES.register("mse", aliases=("mean_squared_error",))
def mse(final_activation: str | None) -> LossFn:
    """Mean squared error; class-index targets are one-hot encoded first."""
    return lambda output, target: F.mse_loss(output, _regression_target(output, target))


@LOSSES.register("rmse", aliases=("root_mean_squared_error",))
def rmse(final_activation: str | None) -> LossFn:
    """Square root of the batch's mean squared error (the epoch figure is the mean of batch values)."""
    return lambda output, target: torch.sqrt(F.mse_loss(output, _regression_target(output, target)) + 1e-12)


@LOSSES.register("mae", aliases=("mean_absolute_error", "l1"))
def mae(final_activation: str | None) -> LossFn:
    """Mean absolute error."""
    return lambda output, target: F.l1_loss(output, _regression_target(output, target))


@LOSSES.register("huber", aliases=("smooth_l1",))
def huber(final_activation: str | None, *, delta: float = 1.0) -> LossFn:
    """Huber loss: squared below ``delta``, linear above it."""
    if float(delta) <= 0:
        raise ConfigError(f"huber delta must be positive, got {delta}")
    return lambda output, target: F.huber_loss(output, _regression_target(output, target), delta=float(delta))


def make_loss(name: str, final_activation: str | None = None, **options: Any) -> LossFn:
    """A loss function by name, e.g. ``make_loss("categorical_crossentropy", label_smoothing=0.1)``."""
    factory = LOSSES.get(name)
    try:
        return factory(final_activation, **options)
    except TypeError:
        raise ConfigError(f"loss {name!r} does not accept options {sorted(options)}") from None


def training_objective(loss_fn: LossFn, regularizers: Sequence[Any], model: torch.nn.Module) -> LossFn:
    """The loss the loop minimizes: ``loss_fn`` plus every regularizer's penalty on ``model`` (the unwrapped one).

    Without regularizers it is ``loss_fn`` itself, so a plain run computes exactly what it always did.
    """
    if not regularizers:
        return loss_fn
    from .regularizers import total_penalty

    penalized = tuple(regularizers)

    def objective(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(output, target) + total_penalty(penalized, model)

    return objective

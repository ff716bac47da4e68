"""Stacking: the meta-model of a ``stacking`` ensemble, fitted on the members' predictions for validation data.

The meta-model is one ``nn.Linear`` over the members' outputs concatenated
(``modelkeep.nn.ensemble``): multinomial logistic regression over their
probabilities (softmax; one output: logistic regression), or linear regression
over their values. It is convex and tiny (``M * C * C + C`` numbers), so it is
fitted exactly, full batch, by L-BFGS in float64 with a strong-Wolfe line
search, from zero weights: the same data give the same weights, with no seed
to remember. An L2 penalty on the weights (not the bias) keeps them finite when
the members separate the validation data perfectly.

This module never imports the training layer (``modelkeep.train``): the
ensemble layer sits below it, and a meta-model of a few hundred numbers needs
no optimizer loop, callbacks or checkpoints.

Worked example: three 10-class members give 30 features per row; on 360 digits
validation rows L-BFGS converges in well under a second to a (10, 30) weight
matrix and 10 biases, stored as ``meta.weight`` and ``meta.bias`` in the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..nn.ensemble import Ensemble, stacked_activation

DEFAULT_PENALTY = 1e-3  # L2 strength per weight, added to the mean loss over validation rows (and positions)
MAX_ITERATIONS = 500


@dataclass(frozen=True)
class StackingFit:
    """What fitting the meta-model did: recorded in the file's lineage."""

    rows: int  # validation rows (times positions, for per-position outputs)
    loss: float  # the final mean loss, penalty excluded
    penalty: float
    iterations: int

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "loss": round(self.loss, 6), "penalty": self.penalty,
                "iterations": self.iterations, "optimizer": "lbfgs"}


@torch.no_grad()
def member_features(module: Ensemble, x: np.ndarray, *, batch_size: int = 256) -> torch.Tensor:
    """The members' outputs for preprocessed rows ``x``, concatenated along the last axis: ``(N, ..., M * C)``."""
    batches = []
    for start in range(0, len(x), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size]))
        batches.append(torch.cat(module.member_outputs(batch), dim=-1).double())
    return torch.cat(batches)


def fit_stacking(module: Ensemble, x: np.ndarray, y: np.ndarray, *, penalty: float = DEFAULT_PENALTY) -> StackingFit:
    """Fit ``module.meta`` on preprocessed rows ``x`` and targets ``y`` (class indices, or values); in place.

    ``y`` has one class index per row (per position for sequence outputs), or
    the regression values, shaped like the members' outputs.
    """
    if not (isinstance(penalty, (int, float)) and np.isfinite(penalty) and penalty >= 0):
        raise ConfigError(f"penalty must be a finite number >= 0, got {str(penalty)[:40]!r}")
    if len(x) == 0:
        raise DataError("the validation data for stacking is empty; give rows the members did not train on")
    features = member_features(module, x)
    units = module.meta.out_features
    kind = stacked_activation(module.outputs, units)
    inputs = features.reshape(-1, features.shape[-1])
    targets = _targets(np.asarray(y), kind, units, len(inputs))
    weight = torch.zeros(units, inputs.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(units, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=MAX_ITERATIONS, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def data_loss() -> torch.Tensor:
        out = inputs @ weight.T + bias
        if kind == "softmax":
            return torch.nn.functional.cross_entropy(out, targets)
        if kind == "sigmoid":
            return torch.nn.functional.binary_cross_entropy_with_logits(out, targets)
        return torch.nn.functional.mse_loss(out, targets)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = data_loss() + penalty * (weight * weight).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        module.meta.weight.copy_(weight.detach().to(module.meta.weight.dtype))
        module.meta.bias.copy_(bias.detach().to(module.meta.bias.dtype))
        final = float(data_loss())
    if not np.isfinite(final):
        raise DataError("fitting the stacking meta-model diverged (non-finite loss); check the validation targets")
    iterations = int(optimizer.state[optimizer._params[0]].get("n_iter", 0))
    return StackingFit(rows=len(inputs), loss=final, penalty=penalty, iterations=iterations)


def _targets(y: np.ndarray, kind: str, units: int, rows: int) -> torch.Tensor:
    """The targets as the loss takes them, checked against the members' outputs (``rows`` of them)."""
    if kind == "none":
        values = np.asarray(y, dtype=np.float64).reshape(-1)
        if values.size != rows * units:
            raise DataError(f"the validation targets hold {values.size} values but the members give {rows} rows of "
                            f"{units}; give one target per member output")
        return torch.from_numpy(values.reshape(rows, units))
    indices = np.asarray(y).reshape(-1)
    if indices.size != rows or indices.dtype.kind not in "iub":
        raise DataError(f"the validation targets must be {rows} class indices, one per row (per position for "
                        f"sequences); got {indices.size} of dtype {indices.dtype}")
    classes = 2 if kind == "sigmoid" else units
    if indices.size and (indices.min() < 0 or indices.max() >= classes):
        raise DataError(f"the validation targets hold class index {int(indices.max())}, but the members know "
                        f"{classes} classes")
    if kind == "sigmoid":
        return torch.from_numpy(indices.astype(np.float64).reshape(rows, 1))
    return torch.from_numpy(indices.astype(np.int64))


__all__ = ["DEFAULT_PENALTY", "StackingFit", "fit_stacking", "member_features"]

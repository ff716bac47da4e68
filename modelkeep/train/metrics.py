"""Metrics over a whole split, never averaged per batch.

Batches only add to sufficient statistics kept on the device — a confusion
matrix for classification, sums of errors and targets for regression — and
the metrics are computed from those once, at the end of the split. So accuracy,
precision, recall, F1 (macro and per class), RMSE, MAE and R² are exactly what
scikit-learn computes on the same predictions (zero division counts as 0, as
scikit-learn's default does).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1")
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2")
DEFAULT_METRICS = {"classification": ("accuracy", "f1"), "regression": ("rmse", "mae", "r2")}
# Metrics where a smaller value is better (for early stopping and plateau schedules in "auto" mode).
LOWER_IS_BETTER = ("loss", "mse", "rmse", "mae")


def check_metric_names(names: Sequence[str] | None, task: str) -> tuple[str, ...]:
    if names is None:
        return DEFAULT_METRICS[task]
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    result = []
    for name in names:
        folded = str(name).lower().replace("f1_macro", "f1").replace("r_squared", "r2")
        if folded not in known:
            raise ConfigError(f"unknown {task} metric {name!r}; choose from {', '.join(known)}")
        result.append(folded)
    return tuple(result)


def predicted_classes(output: torch.Tensor, final_activation: str | None) -> torch.Tensor:
    """Class indices from a model's output: argmax, or a threshold for a single sigmoid/logit column."""
    if output.ndim == 1 or output.shape[-1] == 1:
        threshold = 0.5 if final_activation in ("sigmoid", "softmax") else 0.0
        return (output.reshape(-1) > threshold).long()
    return output.argmax(dim=-1)


class MetricAccumulator:
    """Sufficient statistics of one split, updated per batch on the device, read once."""

    def __init__(self, task: str, *, num_classes: int | None = None, final_activation: str | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.task = task
        self.final_activation = final_activation
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.count = 0
        self.confusion: torch.Tensor | None = None
        self.sums: torch.Tensor | None = None  # rows: sum y, sum y², sum (y-ŷ)², sum |y-ŷ|

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        output = output.detach()
        self.count += len(output)
        if self.task == "classification":
            if self.num_classes is None:
                self.num_classes = 2 if output.ndim == 1 or output.shape[-1] == 1 else int(output.shape[-1])
            if self.confusion is None:
                self.confusion = torch.zeros(self.num_classes * self.num_classes, dtype=torch.int64, device=output.device)
            truth = target.argmax(dim=-1) if target.is_floating_point() and target.ndim == 2 else target.reshape(-1).long()
            predicted = predicted_classes(output, self.final_activation)
            self.confusion += torch.bincount(truth * self.num_classes + predicted, minlength=self.num_classes ** 2)
        else:
            y = target.reshape(len(target), -1).double()
            error = output.reshape(y.shape).double() - y
            stats = torch.stack([y.sum(0), (y * y).sum(0), (error * error).sum(0), error.abs().sum(0)])
            self.sums = stats if self.sums is None else self.sums + stats

    def compute(self, names: Sequence[str] | None = None) -> dict[str, float]:
        names = check_metric_names(names, self.task)
        report = self.report()
        return {name: report[name] for name in names}

    def report(self) -> dict[str, Any]:
        """Every metric, with per-class values and the confusion matrix for classification."""
        if self.task == "classification":
            k = self.num_classes or 0
            matrix = (self.confusion.cpu().numpy().reshape(k, k) if self.confusion is not None
                      else np.zeros((k, k), dtype=np.int64))
            return classification_report_from_confusion(matrix)
        if self.sums is None:
            return {name: float("nan") for name in REGRESSION_METRICS}
        return regression_report_from_sums(self.sums.cpu().numpy(), self.count)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator > 0)


def classification_report_from_confusion(matrix: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro and per-class precision/recall/F1 from a confusion matrix (rows true, columns predicted)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, actual)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    # scikit-learn's macro average runs over the classes present in either the truth or the predictions.
    present = (predicted + actual) > 0
    total = matrix.sum()

    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    return {
        "accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "precision": macro(precision), "recall": macro(recall), "f1": macro(f1),
        "precision_per_class": precision.tolist(), "recall_per_class": recall.tolist(), "f1_per_class": f1.tolist(),
        "support": actual.astype(np.int64).tolist(), "confusion_matrix": matrix.tolist(),
    }


def regression_report_from_sums(sums: np.ndarray, count: int) -> dict[str, Any]:
    """MSE, RMSE, MAE and R² (averaged over outputs, as scikit-learn's ``r2_score`` does) from per-output sums."""
    sum_y, sum_y2, sse, sae = (np.asarray(row, dtype=np.float64) for row in sums)
    n = max(count, 1)
    sst = sum_y2 - sum_y * sum_y / n
    r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.where(sse > 0, 0.0, 1.0))
    mse = float(sse.sum() / (n * len(sse)))
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(sae.sum() / (n * len(sae))), "r2": float(r2.mean())}


def compute_metrics(y_true: Any, output: Any, task: str, *, num_classes: int | None = None,
                    final_activation: str | None = None) -> dict[str, Any]:
    """Every metric for arrays of targets and model outputs (what ``evaluate`` computes, batch by batch)."""
    accumulator = MetricAccumulator(task, num_classes=num_classes, final_activation=final_activation)
    accumulator.update(torch.as_tensor(np.asarray(output)), torch.as_tensor(np.asarray(y_true)))
    return accumulator.report()

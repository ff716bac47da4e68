"""Metrics over a whole split, never averaged per batch.

Batches only add to sufficient statistics kept on the device — a confusion
matrix for classification, sums of errors and targets for regression — and
the metrics are computed from those once, at the end of the split. So accuracy,
precision, recall, F1 (macro and per class), RMSE, MAE and R² are exactly what
scikit-learn computes on the same predictions (zero division counts as 0, as
scikit-learn's default does).

Averages are named for what they are, following scikit-learn's defaults:
``precision``, ``recall`` and ``f1`` of a two-class task are those of the
positive class (the second label, class index 1: scikit-learn's
``average="binary"``); with more classes they are the macro averages.
``precision_macro``, ``recall_macro`` and ``f1_macro`` are always the macro
averages (the unweighted mean over the classes present).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "precision_macro", "recall_macro", "f1_macro")
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2")
DEFAULT_METRICS = {"classification": ("accuracy", "f1"), "regression": ("rmse", "mae", "r2")}
# Above this many classes (a language model's vocabulary: 50,257 for GPT-2) no K×K confusion matrix is
# kept — it would take K² counters — but per-class counts (O(K)) give the same accuracy, precision, recall, F1.
MAX_CONFUSION_CLASSES = 1024
# Metrics where a smaller value is better (for early stopping and plateau schedules in "auto" mode).
LOWER_IS_BETTER = ("loss", "mse", "rmse", "mae")


def check_metric_names(names: Sequence[str] | None, task: str) -> tuple[str, ...]:
    if names is None:
        return DEFAULT_METRICS[task]
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    result = []
    for name in names:
        folded = str(name).lower().replace("r_squared", "r2")
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
            k = self.num_classes
            one_hot = target.is_floating_point() and target.ndim == 2
            truth = target.argmax(dim=-1) if one_hot else target.reshape(-1).long()
            predicted = predicted_classes(output, self.final_activation).reshape(-1)  # (B,) or (B*T,) per token
            if k > MAX_CONFUSION_CLASSES:  # rows: true positives, predicted, actual (per class)
                counts = torch.stack([torch.bincount(truth[truth == predicted], minlength=k),
                                      torch.bincount(predicted, minlength=k), torch.bincount(truth, minlength=k)])
                self.confusion = counts if self.confusion is None else self.confusion + counts
                return
            if self.confusion is None:
                self.confusion = torch.zeros(k * k, dtype=torch.int64, device=output.device)
            self.confusion += torch.bincount(truth * k + predicted, minlength=k ** 2)
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
            if k > MAX_CONFUSION_CLASSES:
                counts = (self.confusion.cpu().numpy() if self.confusion is not None
                          else np.zeros((3, k), dtype=np.int64))
                return classification_report_from_counts(*counts)
            matrix = (self.confusion.cpu().numpy().reshape(k, k) if self.confusion is not None
                      else np.zeros((k, k), dtype=np.int64))
            return classification_report_from_confusion(matrix)
        if self.sums is None:
            return {name: float("nan") for name in REGRESSION_METRICS}
        return regression_report_from_sums(self.sums.cpu().numpy(), self.count)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator > 0)


def classification_report_from_confusion(matrix: np.ndarray) -> dict[str, Any]:
    """Accuracy, and precision/recall/F1 per class, macro-averaged (``*_macro``) and as scikit-learn's
    default names them (positive class for two classes, macro otherwise) from a confusion matrix
    (rows true, columns predicted)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    report = classification_report_from_counts(np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1))
    report["confusion_matrix"] = matrix.tolist()
    return report


def classification_report_from_counts(true_positive: np.ndarray, predicted: np.ndarray,
                                      actual: np.ndarray) -> dict[str, Any]:
    """The report of ``classification_report_from_confusion`` from per-class counts (no confusion matrix):
    true positives, predictions and true samples of each class."""
    true_positive = np.asarray(true_positive).astype(np.float64)
    predicted = np.asarray(predicted).astype(np.float64)
    actual = np.asarray(actual).astype(np.float64)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, actual)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    # scikit-learn's macro average runs over the classes present in either the truth or the predictions.
    present = (predicted + actual) > 0
    total = actual.sum()

    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    averaged = {"precision": macro(precision), "recall": macro(recall), "f1": macro(f1)}
    positive = ({"precision": float(precision[1]), "recall": float(recall[1]), "f1": float(f1[1])}
                if len(actual) == 2 else averaged)
    return {
        "accuracy": float(true_positive.sum() / total) if total else float("nan"),
        **positive, **{f"{name}_macro": value for name, value in averaged.items()},
        "precision_per_class": precision.tolist(), "recall_per_class": recall.tolist(), "f1_per_class": f1.tolist(),
        "support": actual.astype(np.int64).tolist(),
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

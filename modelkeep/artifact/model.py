"""A loaded model: the module plus what it needs to predict — preprocessing and class names."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.preprocess import preprocessor_from_dict
from ..errors import DataError
from ..spec.model import ModelSpec
from ..train.history import History
from .manifest import Manifest


@dataclass(frozen=True)
class Prediction:
    """Predictions for a batch: class names and probabilities (classification) or values (regression)."""

    probabilities: np.ndarray | None  # (N, classes)
    labels: list[str] | None  # predicted class name per row
    values: np.ndarray | None = None  # regression outputs
    class_names: tuple[str, ...] = ()

    def to_records(self, top: int = 3) -> list[dict[str, Any]]:
        if self.probabilities is None:
            return [{"value": np.asarray(v).tolist()} for v in self.values]
        records = []
        for label, row in zip(self.labels, self.probabilities):
            best = np.argsort(-row)[:top]
            records.append({
                "label": label,
                "probability": float(row.max()),
                "top": [{"label": self.class_names[i], "probability": float(row[i])} for i in best],
            })
        return records


@dataclass
class Model:
    """What ``modelkeep.load`` returns."""

    module: torch.nn.Module
    spec: ModelSpec
    manifest: Manifest
    path: Path | None = None
    preprocessing: Any = field(init=False)

    def __post_init__(self) -> None:
        self.preprocessing = preprocessor_from_dict(self.manifest.preprocessing)

    @property
    def labels(self) -> tuple[str, ...] | None:
        return tuple(self.manifest.labels) if self.manifest.labels is not None else None

    @property
    def history(self) -> History:
        return History.from_dict(self.manifest.history)

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.metrics or {})

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        expected = tuple(self.spec.input_shape)
        if x.shape == expected:
            x = x[None]
        if x.shape[1:] != expected:
            raise DataError(
                f"input has shape {list(x.shape)}; this model expects (batch, {', '.join(map(str, expected))})"
            )
        return x

    @torch.no_grad()
    def predict(self, x: Any, *, batch_size: int = 256) -> Prediction:
        """Apply the saved preprocessing and the network; return class names and probabilities."""
        x = self._check_input(x)
        if self.preprocessing is not None:
            x = self.preprocessing.transform(x)
        device = next(self.module.parameters(), torch.empty(0)).device
        outputs = []
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size])).to(device)
            outputs.append(self.module(batch).float().cpu())
        out = torch.cat(outputs) if outputs else torch.empty(0)
        if self.manifest.task == "regression":
            return Prediction(None, None, out.numpy())
        final = self.spec.final_activation()
        if final == "softmax":
            probabilities = out
        elif final == "sigmoid" and out.shape[-1] == 1:
            probabilities = torch.cat([1 - out, out], dim=1)
        else:
            probabilities = torch.softmax(out, dim=1)
        probabilities = probabilities.numpy()
        names = self.labels or tuple(str(i) for i in range(probabilities.shape[1]))
        return Prediction(probabilities, [names[i] for i in probabilities.argmax(axis=1)], None, names)

"""A loaded model: the module plus what it needs to predict — preprocessing and class names.

It also hands back what training needs to continue: the optimizer and
scheduler state saved with it (read lazily from the file).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.preprocess import preprocessor_from_dict
from ..errors import DataError, FormatError
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
    spec: ModelSpec | None  # None for a user-defined class
    manifest: Manifest
    path: Path | None = None
    content_hash: str | None = None  # what a fine-tuned child records as its parent (see docs/format.md)
    verified: bool = True
    preprocessing: Any = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.preprocessing = preprocessor_from_dict(self.manifest.preprocessing)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            if isinstance(exc, FormatError):
                raise
            raise FormatError(f"{self.path}: the preprocessing section is malformed ({type(exc).__name__}: {exc})") from None

    @property
    def labels(self) -> tuple[str, ...] | None:
        return tuple(self.manifest.labels) if self.manifest.labels is not None else None

    @property
    def history(self) -> History:
        return History.from_dict(self.manifest.history)

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.metrics or {})

    @property
    def card(self) -> dict[str, Any]:
        return dict(self.manifest.card or {})

    @property
    def lineage(self) -> dict[str, Any]:
        return dict(self.manifest.lineage or {})

    def optimizer_state(self) -> dict[str, Any] | None:
        """The saved ``optimizer.state_dict()`` (for ``optimizer.load_state_dict``), or ``None`` if none was saved."""
        from .model_file import optimizer_state_dict
        from .tensors import TensorFile

        if self.manifest.optimizer is None:
            return None
        if self.path is None:
            raise DataError("this model was not loaded from a file, so it has no saved optimizer state")
        with TensorFile(self.path, verify=self.verified) as handle:
            return optimizer_state_dict(self.manifest, handle)

    def scheduler_state(self) -> dict[str, Any] | None:
        """The saved ``scheduler.state_dict()``, or ``None``."""
        section = self.manifest.scheduler
        return None if section is None else section.get("state")

    def _input_shape(self) -> tuple[Any, ...] | None:
        if self.spec is not None:
            return tuple(self.spec.input_shape)
        inputs = (self.manifest.signature or {}).get("inputs") or []
        if len(inputs) == 1 and isinstance(inputs[0].get("shape"), list) and inputs[0]["shape"][:1] == [None]:
            return tuple(inputs[0]["shape"][1:])
        return None

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        expected = self._input_shape()
        if expected is None:
            return x
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
        final = self.spec.final_activation() if self.spec is not None else None
        if final == "softmax":
            probabilities = out
        elif final == "sigmoid" and out.shape[-1] == 1:
            probabilities = torch.cat([1 - out, out], dim=1)
        else:
            probabilities = torch.softmax(out, dim=1)
        probabilities = probabilities.numpy()
        names = self.labels or tuple(str(i) for i in range(probabilities.shape[1]))
        return Prediction(probabilities, [names[i] for i in probabilities.argmax(axis=1)], None, names)

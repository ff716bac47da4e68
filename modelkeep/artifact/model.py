"""A loaded model: the module plus what it needs to predict — preprocessing, post-processing and class names.

The post-processor is the one the file records (``postprocessing``); a file
written before that section existed gets the one its own record implies
(``manifest_builder.choose_postprocessing``), derived here once, at load. It
also hands back what training needs to continue: the optimizer and scheduler
state saved with it (read lazily from the file). Nothing here imports training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, FormatError
from ..processing.postprocess import PostProcessor, Prediction, postprocessor_from_dict
from ..processing.preprocess import preprocessor_from_dict
from ..spec.model import ModelSpec
from .history import History
from .manifest import Manifest
from .manifest_builder import choose_postprocessing


@dataclass
class Model:
    """What ``modelkeep.load`` returns."""

    module: torch.nn.Module
    spec: ModelSpec | None  # None for a user-defined class
    manifest: Manifest
    path: Path | None = None
    content_hash: str | None = None  # what a fine-tuned child records as its parent (see docs/format.md)
    verified: bool = True
    final_activation: str | None = None  # the network's last activation, when its architecture says
    output_units: int | None = None  # the width of its output, when its architecture says
    preprocessing: Any = field(init=False)
    postprocessor: PostProcessor = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.preprocessing = preprocessor_from_dict(self.manifest.preprocessing)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            if isinstance(exc, FormatError):
                raise
            raise FormatError(f"{self.path}: the preprocessing section is malformed ({type(exc).__name__}: {exc})") from None
        try:
            self.postprocessor = self._postprocessor()
        except FormatError as exc:
            raise FormatError(f"{self.path}: {exc}") from None

    def _postprocessor(self) -> PostProcessor:
        """The file's post-processor; for a file without one, what its task, loss, width and activation imply."""
        manifest = self.manifest
        if manifest.postprocessing is not None:
            return postprocessor_from_dict(manifest.postprocessing, labels=manifest.labels)
        final = self.final_activation
        units = self.output_units
        if self.spec is not None:
            final = final if final is not None else self.spec.final_activation()
            units = units if units is not None else (int(self.spec.output_shape[-1]) if self.spec.output_shape else None)
        return choose_postprocessing(task=manifest.task, labels=manifest.labels, signature=manifest.signature,
                                     hyperparameters=manifest.hyperparameters, final_activation=final,
                                     output_units=units)

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
        from .optimizer_state import optimizer_state_dict
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
        """Apply the saved preprocessing, the network and the saved post-processing: class names and probabilities."""
        x = self._check_input(x)
        if self.preprocessing is not None:
            x = self.preprocessing.transform(x)
        device = next(self.module.parameters(), torch.empty(0)).device
        outputs = []
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size])).to(device)
            outputs.append(self.module(batch).float().cpu())
        out = torch.cat(outputs) if outputs else torch.empty(0)
        return self.postprocessor.apply(out)


__all__ = ["Model", "Prediction"]

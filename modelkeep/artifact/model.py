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
from .activation_memory import rows_per_batch
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

    def _input_dtype(self) -> np.dtype:
        """The dtype the saved signature gives the input (int64 token ids, float32 images); float32 if unsaid."""
        inputs = (self.manifest.signature or {}).get("inputs") or []
        declared = inputs[0].get("dtype") if len(inputs) == 1 and isinstance(inputs[0], dict) else None
        return np.dtype(declared if declared in ("float32", "float64", "int64", "bool") else "float32")

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        dtype, x = self._input_dtype(), np.asarray(x)
        if dtype.kind == "i" and x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
            raise DataError("this model takes token ids (int64) but the input holds fractional or non-finite "
                            "values; give whole numbers")
        x = np.asarray(x, dtype=dtype)
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
    def predict(self, x: Any, *, batch_size: int = 256, allow_nonfinite: bool = False,
                memory_budget: int | None = None) -> Prediction:
        """Apply the saved preprocessing, the network and the saved post-processing: class names and probabilities.

        Rows holding NaN or infinite values are refused (``DataError`` naming
        them), and so are network outputs that come out non-finite: a NaN never
        becomes a class or a probability silently. ``allow_nonfinite=True``
        passes such values through (their answers are then NaN).

        For a spec architecture, rows run in batches small enough that the
        activations (estimated from the spec's inferred shapes) stay within
        ``memory_budget`` bytes (default ``DEFAULT_ACTIVATION_BUDGET``, 1 GiB);
        a model whose single row needs more is refused with ``DataError``.
        """
        x = self.preprocess(x, allow_nonfinite=allow_nonfinite)
        first = next(self.module.parameters(), torch.empty(0))
        device = first.device
        if self.spec is not None:
            batch_size = rows_per_batch(self.spec, batch_size, memory_budget,
                                        element_bytes=max(4, first.element_size()))
        outputs = []
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size])).to(device)
            outputs.append(self.module(batch).float().cpu())
        out = torch.cat(outputs) if outputs else torch.empty(0)
        return self.postprocess(out, allow_nonfinite=allow_nonfinite)

    def preprocess(self, x: Any, *, allow_nonfinite: bool = False) -> np.ndarray:
        """``predict``'s first half: the rows checked against the signature and through the saved preprocessing,
        ready for the network (for another runtime of the same network, such as an ONNX session)."""
        takes_text = getattr(self.preprocessing, "takes_text", False)
        if takes_text:  # a saved tokenizer makes the token ids the checks below are about
            x = self.preprocessing.transform(x)
        x = self._check_input(x)
        if not allow_nonfinite:
            refuse_nonfinite(x, "input")
        if self.preprocessing is not None and not takes_text:
            x = self.preprocessing.transform(x)
            if not allow_nonfinite:
                refuse_nonfinite(x, "preprocessed input")
        return x

    def postprocess(self, out: Any, *, allow_nonfinite: bool = False) -> Prediction:
        """``predict``'s second half: the network's output (a tensor or an array) through the saved post-processing."""
        out = torch.as_tensor(out).float().cpu()
        if not allow_nonfinite:
            refuse_nonfinite(out.numpy(), "network output")
        return self.postprocessor.apply(out)


def refuse_nonfinite(values: np.ndarray, what: str) -> None:
    """``DataError`` naming the first rows of ``values`` that hold NaN or an infinity (floating arrays only)."""
    if values.dtype.kind not in "fc" or values.size == 0:
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    rows = np.flatnonzero(~finite.reshape(len(values), -1).all(axis=1)) if values.ndim else np.array([0])
    shown = ", ".join(str(int(r)) for r in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    if what == "network output":
        advice = "the network overflowed on them (check the inputs' scale)"
    else:
        advice = "fix or drop those rows (a missing value is not a number the model was trained on)"
    raise DataError(
        f"{what} row{'s' if len(rows) != 1 else ''} {shown} hold{'' if len(rows) != 1 else 's'} NaN or infinite "
        f"values; {advice}, or pass allow_nonfinite=True to get NaN answers for them"
    )


__all__ = ["Model", "Prediction", "refuse_nonfinite"]

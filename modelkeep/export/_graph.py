"""The module that is exported: the saved preprocessing folded in front of the network, and optionally the
post-processor's probabilities as a second output.

``Standardize``, ``MinMaxScale`` and ``Rescale`` are affine maps of the input, so they become a few constant
operations in the graph and the exported model takes the same raw input ``predict`` takes. Each step is kept
in the form ``predict`` computes it, ``(x - centre) / divisor`` or ``x * factor + offset`` (not merged into one
``x * a + b``, which would lose digits to cancellation when the centre is large). Target-only steps (a label
map, one-hot targets) do not touch inputs and are recorded, not folded. A feature step of any other kind
cannot be folded: then nothing is, the graph takes preprocessed inputs, and the export says so.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ..processing.preprocess import MinMaxScale, Pipeline, Rescale, Standardize


@dataclass(frozen=True)
class Affine:
    """One folded step: ``(x - a) / b`` (``centre``) or ``x * a + b`` (``scale``), with a and b broadcastable."""

    form: str  # "centre" or "scale"
    a: np.ndarray
    b: np.ndarray

    def forward_numpy(self, x: np.ndarray) -> np.ndarray:
        return (x - self.a) / self.b if self.form == "centre" else x * self.a + self.b

    def inverse_numpy(self, z: np.ndarray) -> np.ndarray:
        """The raw value that this step maps to ``z`` (used to make check inputs that look like real ones)."""
        if self.form == "centre":
            return z * self.b + self.a
        return (z - self.b) / np.where(self.a != 0, self.a, 1.0)


def feature_steps(preprocessing: Any) -> list[Any]:
    """The steps of ``preprocessing`` that transform inputs, in order (target-only steps left out)."""
    if preprocessing is None:
        return []
    steps = preprocessing.steps if isinstance(preprocessing, Pipeline) else [preprocessing]
    return [step for step in steps if not getattr(step, "targets_only", False)]


def affine_steps(preprocessing: Any) -> list[Affine] | None:
    """The input steps as affine maps, or ``None`` when one of them is not affine (then none is folded)."""
    folded = []
    for step in feature_steps(preprocessing):
        if isinstance(step, Standardize):
            folded.append(Affine("centre", np.asarray(step.mean, np.float64), np.asarray(step.std, np.float64)))
        elif isinstance(step, MinMaxScale):
            low, high = np.asarray(step.minimum, np.float64), np.asarray(step.maximum, np.float64)
            folded.append(Affine("centre", low, np.where(high > low, high - low, 1.0)))
        elif isinstance(step, Rescale):
            folded.append(Affine("scale", np.asarray(step.factor, np.float64), np.asarray(step.offset, np.float64)))
        else:
            return None
    return folded


class _AffineStep(torch.nn.Module):
    def __init__(self, step: Affine) -> None:
        super().__init__()
        self.centre = step.form == "centre"
        self.register_buffer("a", torch.from_numpy(np.asarray(step.a, np.float32).copy()))
        self.register_buffer("b", torch.from_numpy(np.asarray(step.b, np.float32).copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.a) / self.b if self.centre else x * self.a + self.b


class _Probabilities(torch.nn.Module):
    """What the saved post-processor reports as probabilities: softmax over the last axis, or ``[1 - p, p]``."""

    def __init__(self, kind: str, already_probabilities: bool) -> None:
        super().__init__()
        self.kind, self.already = kind, already_probabilities

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "softmax":
            return out if self.already else torch.softmax(out, dim=-1)
        positive = out.clamp(0.0, 1.0) if self.already else torch.sigmoid(out)
        return torch.cat([1 - positive, positive], dim=-1)


class ExportGraph(torch.nn.Module):
    """Folded preprocessing (on the first input) → the network → its outputs (+ probabilities)."""

    def __init__(self, network: torch.nn.Module, steps: list[Affine], probabilities: _Probabilities | None) -> None:
        super().__init__()
        self.network = network
        device = next(iter(network.parameters()), torch.empty(0)).device
        self.steps = torch.nn.ModuleList(_AffineStep(step) for step in steps).to(device)
        self.probabilities = probabilities

    def forward(self, *inputs: torch.Tensor) -> Any:
        if len(self.steps):
            first = inputs[0].to(torch.float32)  # predict hands the network float32 after preprocessing
            for step in self.steps:
                first = step(first)
            inputs = (first, *inputs[1:])
        out = self.network(*inputs)
        if self.probabilities is None:
            return out
        return out, self.probabilities(out)


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` in evaluation mode (dropout off, running statistics used) for the block; every submodule's
    own mode is restored afterwards, so exporting a model never switches the caller's model to training."""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for sub, training in modes:
            sub.training = training


def probabilities_head(postprocessor: Any) -> _Probabilities | None:
    """The probabilities module for a saved post-processor; ``None`` for regression (identity)."""
    kind = getattr(postprocessor, "type", None)
    if kind not in ("softmax", "sigmoid"):
        return None
    return _Probabilities(kind, getattr(postprocessor, "input", "logits") == "probabilities")


__all__ = ["Affine", "ExportGraph", "affine_steps", "evaluating", "feature_steps", "probabilities_head"]

"""Post-processing saved with a model: how a network's raw outputs become answers.

A model file records its post-processor in the manifest's ``postprocessing``
section (docs/format.md, 3.2), so ``predict`` applies what the model was trained
for instead of guessing it from the last layer. Three kinds, each a frozen
dataclass with ``to_dict``/``from_dict`` and one ``apply``:

* ``softmax``: several outputs, one per class; class = argmax. ``input`` says
  whether the outputs are logits (softmax is applied) or already probabilities
  (a network that ends in a softmax layer).
* ``sigmoid``: ONE output for two classes; ``p = sigmoid(logit)`` (or the output
  itself when it is already a probability); class 1 when ``p >= threshold``
  (0.5), and probabilities ``[1 - p, p]`` are reported for both classes.
* ``identity``: regression; the values as they are.

Sequence outputs: a network whose output has shape ``(N, T, V)`` (a language
model's next-token logits at every position) is post-processed per position,
over the LAST axis: ``softmax`` gives probabilities of shape ``(N, T, V)`` and
``labels`` as one list of ``T`` class names per sample; ``sigmoid`` on
``(N, T, 1)`` gives ``(N, T, 2)`` the same way. ``(N, V)`` outputs (and any
other shape, flattened to ``(N, columns)`` as before) are unchanged.

The label map (class index to name) is the manifest's ``labels`` section; a
post-processor is built with it (``labels=``) and names its answers with it.
``postprocessor_for`` chooses the kind from the task, the loss, the output
width and the network's final activation. ``apply`` takes the network's output
tensor (torch is imported only there, so the arithmetic is torch's own, bit for
bit what training computed); the rest is plain data. It never reads a file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol

import numpy as np

from .._registry import Registry
from ..errors import ConfigError, DataError, FormatError

if TYPE_CHECKING:  # pragma: no cover
    import torch

LOGITS, PROBABILITIES = "logits", "probabilities"
# Losses whose single output is a score in [0, 1] rather than a logit (mse on 0/1 targets). The loss registry
# lives in modelkeep.train, above this layer; these are its canonical names and aliases for such losses.
_SCORE_LOSSES = frozenset({"mse", "mean_squared_error", "rmse", "root_mean_squared_error", "mae",
                           "mean_absolute_error", "l1", "huber", "smooth_l1"})
_BINARY_LOSSES = frozenset({"binary_crossentropy", "bce", "binary_cross_entropy"})


@dataclass(frozen=True)
class Prediction:
    """Predictions for a batch: class names and probabilities (classification) or values (regression).

    For a sequence output (``sequence`` is True) ``probabilities`` is ``(N, T, classes)`` and
    ``labels[i]`` is the list of the ``T`` class names predicted at each position of sample ``i``.
    """

    probabilities: np.ndarray | None  # (N, classes), or (N, T, classes) for a sequence output
    labels: list[str] | list[list[str]] | None  # predicted class name per row (per position of each row)
    values: np.ndarray | None = None  # regression outputs
    class_names: tuple[str, ...] = ()

    @property
    def sequence(self) -> bool:
        return self.probabilities is not None and self.probabilities.ndim == 3

    def to_records(self, top: int = 3) -> list[dict[str, Any]]:
        """One record per sample: ``label``, ``probability`` and the ``top`` classes; for a sequence output
        ``labels`` and ``probabilities`` (one per position) and ``top`` per position."""
        if self.probabilities is None:
            return [{"value": np.asarray(v).tolist()} for v in self.values]
        if self.sequence:
            return [self._sequence_record(names, rows, top) for names, rows in zip(self.labels, self.probabilities)]
        records = []
        for label, row in zip(self.labels, self.probabilities):
            best = np.argsort(-row)[:top]
            records.append({
                "label": label,
                "probability": float(row.max()),
                "top": [{"label": self.class_names[i], "probability": float(row[i])} for i in best],
            })
        return records

    def _sequence_record(self, names: list[str], rows: np.ndarray, top: int) -> dict[str, Any]:
        best = np.argsort(-rows, axis=1, kind="stable")[:, :top]
        return {
            "labels": list(names),
            "probabilities": [float(p) for p in rows.max(axis=1)],
            "top": [[{"label": self.class_names[i], "probability": float(row[i])} for i in order]
                    for row, order in zip(rows, best)],
        }


class PostProcessor(Protocol):
    """Turns a batch of network outputs into a ``Prediction``.

    Call order: built once per loaded model (``postprocessor_from_dict(section, labels=...)``),
    then ``apply`` for every batch; ``to_dict`` is what ``save`` writes. A new kind subclasses
    nothing: it is a frozen dataclass with these three methods, registered in ``POSTPROCESSORS``::

        @POSTPROCESSORS.register("clip")
        @dataclass(frozen=True)
        class Clip:
            low: float = 0.0
            high: float = 1.0
            def apply(self, outputs):  # a torch tensor (N, ...)
                return Prediction(None, None, outputs.clamp(self.low, self.high).numpy())
            def to_dict(self):
                return {"type": "clip", "low": self.low, "high": self.high}
            @classmethod
            def from_dict(cls, data, *, labels=None):
                return cls(float(data.get("low", 0.0)), float(data.get("high", 1.0)))
    """

    def apply(self, outputs: Any) -> Prediction: ...
    def to_dict(self) -> dict[str, Any]: ...


POSTPROCESSORS: Registry[type] = Registry("post-processor", FormatError)


def _names(labels: tuple[str, ...] | None, classes: int, kind: str) -> tuple[str, ...]:
    if labels is None:
        return tuple(str(i) for i in range(classes))
    if len(labels) != classes:
        raise FormatError(
            f"the file names {len(labels)} classes ({', '.join(labels[:5])}{', ...' if len(labels) > 5 else ''}) "
            f"but its {kind} post-processing gives {classes}; the labels and the network's output do not match"
        )
    return labels


def _input_field(data: Mapping[str, Any], kind: str) -> str:
    value = data.get("input", LOGITS)
    if value not in (LOGITS, PROBABILITIES):
        raise FormatError(f"malformed {kind!r} post-processing in the file: 'input' must be "
                          f"{LOGITS!r} or {PROBABILITIES!r}, got {str(value)[:40]!r}")
    return value


def _as_2d(outputs: Any) -> "torch.Tensor":
    """The network's outputs as a float32 CPU tensor of shape (N, columns), or (N, T, columns) for a sequence."""
    import torch

    outputs = torch.as_tensor(outputs).detach().float().cpu()
    return outputs.reshape(len(outputs), -1) if outputs.ndim not in (2, 3) else outputs


def _chosen(names: tuple[str, ...], indices: np.ndarray) -> list[str] | list[list[str]]:
    """Class names of chosen indices: one per row, or a list per row for a sequence (N, T)."""
    if indices.ndim == 2:
        return [[names[i] for i in row] for row in indices.tolist()]
    return [names[i] for i in indices]


@POSTPROCESSORS.register("softmax")
@dataclass(frozen=True)
class Softmax:
    """Several outputs, one per class: probabilities by softmax (unless already probabilities), class = argmax."""

    input: str = LOGITS
    labels: tuple[str, ...] | None = field(default=None, compare=False)
    type: ClassVar[str] = "softmax"

    def apply(self, outputs: Any) -> Prediction:
        outputs = _as_2d(outputs)
        if outputs.shape[-1] < 2:
            raise DataError(
                "the network gives one output column but the file records softmax post-processing (one column per "
                "class): a one-logit binary model needs sigmoid post-processing; re-save it with "
                "postprocessing='sigmoid'"
            )
        import torch

        probabilities = (torch.softmax(outputs, dim=-1) if self.input == LOGITS else outputs).numpy()
        names = _names(self.labels, probabilities.shape[-1], "softmax")
        return Prediction(probabilities, _chosen(names, probabilities.argmax(axis=-1)), None, names)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "input": self.input}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, labels: tuple[str, ...] | None = None) -> "Softmax":
        return cls(_input_field(data, "softmax"), labels)


@POSTPROCESSORS.register("sigmoid")
@dataclass(frozen=True)
class Sigmoid:
    """One output for two classes: ``p = sigmoid(logit)``; class 1 when ``p >= threshold``; both probabilities reported."""

    input: str = LOGITS
    threshold: float = 0.5
    labels: tuple[str, ...] | None = field(default=None, compare=False)
    type: ClassVar[str] = "sigmoid"

    def apply(self, outputs: Any) -> Prediction:
        outputs = _as_2d(outputs)
        if outputs.shape[-1] != 1:
            raise DataError(
                f"the network gives {outputs.shape[-1]} output columns but the file records sigmoid post-processing "
                "for one output (a binary model); re-save it with postprocessing='softmax'"
            )
        import torch

        positive = torch.sigmoid(outputs) if self.input == LOGITS else outputs.clamp(0.0, 1.0)
        probabilities = torch.cat([1 - positive, positive], dim=-1).numpy()
        names = _names(self.labels, 2, "sigmoid")
        chosen = (positive[..., 0] >= self.threshold).numpy().astype(np.int64)
        return Prediction(probabilities, _chosen(names, chosen), None, names)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "input": self.input, "threshold": float(self.threshold)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, labels: tuple[str, ...] | None = None) -> "Sigmoid":
        threshold = data.get("threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise FormatError(f"malformed 'sigmoid' post-processing in the file: 'threshold' must be a number in "
                              f"[0, 1], got {str(threshold)[:40]!r}")
        return cls(_input_field(data, "sigmoid"), float(threshold), labels)


@POSTPROCESSORS.register("identity")
@dataclass(frozen=True)
class Identity:
    """Regression: the network's outputs are the answers."""

    type: ClassVar[str] = "identity"

    def apply(self, outputs: Any) -> Prediction:
        import torch

        return Prediction(None, None, torch.as_tensor(outputs).detach().float().cpu().numpy())

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, labels: tuple[str, ...] | None = None) -> "Identity":
        return cls()


def postprocessor_for(task: str, *, output_units: int | None, final_activation: str | None = None,
                      loss: str | None = None, labels: tuple[str, ...] | None = None) -> PostProcessor:
    """The post-processor a model needs, from what it was trained for.

    regression → identity. Classification with one output → sigmoid and a 0.5
    threshold (on the output itself when the network already ends in a sigmoid,
    or when a regression loss such as ``mse`` trained it to give a score); with
    several outputs → softmax (none applied again when the network ends in a
    softmax). When the output width is unknown, ``binary_crossentropy`` means one
    logit and anything else several.
    """
    if task == "regression":
        return Identity()
    if task != "classification":
        raise FormatError(f"task must be 'classification' or 'regression', got {str(task)[:40]!r}")
    loss_name = str(loss).lower() if loss is not None else None
    labels = tuple(labels) if labels is not None else None
    if output_units is None:
        output_units = 1 if loss_name in _BINARY_LOSSES else None
    if output_units == 1:
        already = final_activation in ("sigmoid", "softmax") or loss_name in _SCORE_LOSSES
        return Sigmoid(PROBABILITIES if already else LOGITS, 0.5, labels)
    return Softmax(PROBABILITIES if final_activation == "softmax" else LOGITS, labels)


def postprocessor_from_dict(data: Mapping[str, Any], *, labels: list[str] | tuple[str, ...] | None = None) -> PostProcessor:
    """Rebuild a saved post-processor; an unknown ``type`` is a ``FormatError`` naming the known ones."""
    if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
        raise FormatError("postprocessing in the file must be an object with a string 'type'")
    return POSTPROCESSORS.get(data["type"]).from_dict(data, labels=tuple(labels) if labels is not None else None)


def make_postprocessor(choice: Any, *, labels: list[str] | tuple[str, ...] | None = None) -> PostProcessor:
    """A post-processor from a caller's choice: a name (``"sigmoid"``), a section dict, or a post-processor."""
    if hasattr(choice, "apply") and hasattr(choice, "to_dict"):
        return choice
    if isinstance(choice, str):
        choice = {"type": choice}
    try:
        return postprocessor_from_dict(choice, labels=labels)
    except FormatError as exc:  # the caller's argument, not a file, is wrong
        raise ConfigError(f"postprocessing={str(choice)[:80]}: {exc}") from None


__all__ = ["Identity", "POSTPROCESSORS", "PostProcessor", "Prediction", "Sigmoid", "Softmax", "make_postprocessor",
           "postprocessor_for", "postprocessor_from_dict"]

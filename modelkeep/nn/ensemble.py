"""``Ensemble``: several spec-built networks run side by side and combined into one output.

The members live in a ``ModuleList`` (state-dict keys ``members.<i>.<name>``).
Each member's raw output is first turned into what its own saved post-processing
would report (its ``activation``: ``softmax`` or ``sigmoid`` over logits,
``clamp`` for a one-output network that already gives a probability, ``none``
for probabilities or regression values), then combined:

* ``average``, ``weighted`` and ``soft-vote``: the weighted mean of those
  probabilities (classifiers) or values (regression). For classifiers
  ``soft-vote`` and ``average`` compute the same thing; ``weighted`` only
  insists that weights are given.
* ``majority``: each member votes for its predicted class (the argmax over
  the last axis; for one output, class 1 when its probability is >= 0.5) and
  the output is each class's (weighted) share of the votes. The answer is the
  argmax of the shares, so a tie goes to the lowest class index; with one
  output the share of class 1 goes through the usual sigmoid rule (>= 0.5), so
  an even split goes to class 1. Use an odd number of members to avoid ties.

Weights are plain floats, normalised to sum to one; they are part of the
architecture, not of the state dict. This module knows nothing of files: the
``ensemble`` architecture codec (``modelkeep.artifact.ensemble_codec``) writes
and rebuilds it.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError

METHODS = ("average", "weighted", "soft-vote", "majority")
ACTIVATIONS = ("softmax", "sigmoid", "clamp", "none")
OUTPUTS = ("probabilities", "values")  # what the ensemble gives: class probabilities, or regression values
CLASSIFIER_ONLY = ("soft-vote", "majority")


def normalised_weights(weights: Sequence[float] | None, count: int) -> tuple[float, ...]:
    """``weights`` divided by their sum (equal weights when ``None``); ``ConfigError`` for anything unusable."""
    if count < 1:
        raise ConfigError("an ensemble needs at least one member")
    if weights is None:
        return tuple(1.0 / count for _ in range(count))
    values = list(weights)
    if len(values) != count:
        raise ConfigError(f"{len(values)} weights were given for {count} members; give one weight per member")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
               for w in values):
        raise ConfigError(f"weights must be finite numbers >= 0, got {[str(w)[:20] for w in values][:8]}")
    total = math.fsum(float(w) for w in values)
    if total <= 0:
        raise ConfigError("the weights sum to 0; give at least one member a positive weight")
    if abs(total - 1.0) <= 1e-12:  # already normalised (as the file stores them): keep the exact values
        return tuple(float(w) for w in values)
    return tuple(float(w) / total for w in values)


def _signature(module: nn.Module, index: int) -> tuple[Any, Any]:
    """``(inputs, output shape)`` of a spec-built member: ``[(name, shape, dtype)]`` and the output's shape."""
    spec = getattr(module, "spec", None)
    if spec is None or not hasattr(spec, "inputs"):
        raise ConfigError(f"member {index} is a {type(module).__name__} without a spec; ensembles of this version "
                          "hold spec-built networks only (modelkeep.build, or files saved from them)")
    if len(spec.outputs) != 1:
        raise ConfigError(f"member {index} ({spec.name}) has {len(spec.outputs)} outputs; ensemble members need one")
    inputs = [(tuple(spec.shapes[layer.name]), getattr(layer.kind.fields, "dtype", "float32")) for layer in spec.inputs]
    return inputs, tuple(spec.output_shape)


def check_members(members: Sequence[nn.Module], activations: Sequence[str], outputs: str, method: str) -> None:
    """``ConfigError`` unless the members take the same inputs and give outputs that can be combined."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {str(method)[:40]!r}")
    if outputs not in OUTPUTS:
        raise ConfigError(f"outputs must be one of {', '.join(OUTPUTS)}; got {str(outputs)[:40]!r}")
    if outputs == "values" and method in CLASSIFIER_ONLY:
        raise ConfigError(f"method {method!r} votes on classes; a regression ensemble takes 'average' or 'weighted'")
    if len(activations) != len(members) or any(a not in ACTIVATIONS for a in activations):
        raise ConfigError(f"each member needs an activation among {', '.join(ACTIVATIONS)}; got {list(activations)}")
    if outputs == "values" and any(a != "none" for a in activations):
        raise ConfigError("a regression ensemble combines values as they are; its members' activations must be 'none'")
    first_inputs, first_output = _signature(members[0], 0)
    for index, member in enumerate(members[1:], start=1):
        inputs, output = _signature(member, index)
        if inputs != first_inputs:
            raise ConfigError(f"member {index} takes inputs {_shown(inputs)} but member 0 takes "
                              f"{_shown(first_inputs)}; ensemble members must share the input signature")
        if output != first_output:
            raise ConfigError(f"member {index} gives outputs of shape {list(output)} but member 0 gives "
                              f"{list(first_output)}; ensemble members must give the same number of outputs")
    kinds = {"softmax": "several", "none": "several", "sigmoid": "one", "clamp": "one"}
    if outputs == "probabilities" and len({kinds[a] for a in activations}) != 1:
        raise ConfigError(f"the members mix one-output (sigmoid) and one-per-class (softmax) classifiers "
                          f"({list(activations)}); they cannot vote together")


def _shown(inputs: Any) -> str:
    return ", ".join(f"{dtype}{list(shape)}" for shape, dtype in inputs)


class Ensemble(nn.Module):
    """Spec-built members combined by ``method``; ``sources`` (the members' content hashes) are carried for the file."""

    architecture_type = "ensemble"  # the architecture codec that writes it (modelkeep.artifact.ensemble_codec)

    def __init__(self, members: Sequence[nn.Module], *, method: str = "soft-vote",
                 weights: Sequence[float] | None = None, activations: Sequence[str], outputs: str = "probabilities",
                 sources: Sequence[str] | None = None) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        if method == "weighted" and weights is None:
            raise ConfigError("method 'weighted' needs weights=, one per member")
        check_members(members, activations, outputs, method)
        self.members = nn.ModuleList(members)
        self.method = method
        self.weights = normalised_weights(weights, len(members))
        self.activations = tuple(activations)
        self.outputs = outputs
        self.sources = tuple(sources) if sources is not None else None
        if self.sources is not None and len(self.sources) != len(members):
            raise ConfigError(f"{len(self.sources)} content hashes were given for {len(members)} members")

    @property
    def specs(self) -> list[Any]:
        """The members' ``ModelSpec``s, in order."""
        return [member.spec for member in self.members]

    def member_outputs(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Each member's output as its own post-processing reports it: probabilities, or values."""
        return [_activate(member(*inputs), activation) for member, activation in zip(self.members, self.activations)]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.member_outputs(*inputs)  # each (N, ..., C)
        if self.method == "majority":
            outputs = [_vote(output) for output in outputs]
        combined = outputs[0] * self.weights[0]
        for weight, output in zip(self.weights[1:], outputs[1:]):
            combined = combined + output * weight
        return combined


def _activate(output: torch.Tensor, activation: str) -> torch.Tensor:
    output = output.float()
    if activation == "softmax":
        return torch.softmax(output, dim=-1)
    if activation == "sigmoid":
        return torch.sigmoid(output)
    if activation == "clamp":
        return output.clamp(0.0, 1.0)
    return output


def _vote(probabilities: torch.Tensor) -> torch.Tensor:
    """One vote per row (per position): one-hot of the argmax, or for one output 1.0 when p >= 0.5."""
    if probabilities.shape[-1] == 1:
        return (probabilities >= 0.5).to(probabilities.dtype)
    chosen = probabilities.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(probabilities).scatter(-1, chosen, 1.0)


__all__ = ["ACTIVATIONS", "CLASSIFIER_ONLY", "METHODS", "OUTPUTS", "Ensemble", "check_members", "normalised_weights"]

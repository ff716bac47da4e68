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

* ``stacking``: a small meta-model, ``meta`` (one ``nn.Linear``), reads the
  members' outputs concatenated along the last axis (``M * C`` features for
  ``M`` members of ``C`` outputs) and gives ``C`` outputs: a softmax over them
  (multinomial logistic regression), a sigmoid for one output (logistic
  regression), or the values as they are (linear regression). Its weights are
  trained by ``modelkeep.ensemble.stacking`` on validation predictions and live
  in the state dict as ``meta.weight`` and ``meta.bias``; the members' weights
  are not used.

Weights are plain floats, normalised to sum to one; they are part of the
architecture, not of the state dict.

``shared`` maps a member tensor to an identical one of another member
(``{"members.3.layers.body.weight": "members.0.layers.body.weight"}``): the
state dict leaves the first out while the two are still equal, and loading a
state dict without it fills it with the very tensor of the second (the same
memory, not a copy). Fine-tunes of one base with frozen layers are stored once
that way. This module knows nothing of files: the ``ensemble`` architecture
codec (``modelkeep.artifact.ensemble_codec``) writes and rebuilds it.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError

METHODS = ("average", "weighted", "soft-vote", "majority", "stacking")
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
                 sources: Sequence[str] | None = None, shared: Mapping[str, str] | None = None) -> None:
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
        if method == "stacking":
            units = int(members[0].spec.output_shape[-1])
            self.meta = nn.Linear(len(members) * units, units)
        self.shared = check_shared(self, shared or {})
        self.register_state_dict_post_hook(_leave_out_shared)
        self.register_load_state_dict_pre_hook(_fill_in_shared)
        self.register_load_state_dict_post_hook(_tie_shared)

    @property
    def specs(self) -> list[Any]:
        """The members' ``ModelSpec``s, in order."""
        return [member.spec for member in self.members]

    def member_outputs(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Each member's output as its own post-processing reports it: probabilities, or values."""
        return [_activate(member(*inputs), activation) for member, activation in zip(self.members, self.activations)]

    def live_shared(self) -> dict[str, str]:
        """The ``shared`` pairs whose two tensors are still equal (what a save may store once)."""
        tensors = dict(self.named_parameters(remove_duplicate=False)) | dict(self.named_buffers(remove_duplicate=False))
        live = {}
        for alias, target in self.shared.items():
            mine, theirs = tensors[alias], tensors[target]
            if mine.is_meta or theirs.is_meta or (mine.shape == theirs.shape and mine.dtype == theirs.dtype
                                                  and torch.equal(mine.detach(), theirs.detach())):
                live[alias] = target
        return live

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.member_outputs(*inputs)  # each (N, ..., C)
        if self.method == "stacking":
            combined = self.meta(torch.cat(outputs, dim=-1))  # (N, ..., M*C) -> (N, ..., C)
            return _activate(combined, stacked_activation(self.outputs, combined.shape[-1]))
        if self.method == "majority":
            outputs = [_vote(output) for output in outputs]
        combined = outputs[0] * self.weights[0]
        for weight, output in zip(self.weights[1:], outputs[1:]):
            combined = combined + output * weight
        return combined


def stacked_activation(outputs: str, units: int) -> str:
    """What turns the meta-model's outputs into the ensemble's: softmax, sigmoid (one output) or nothing."""
    if outputs == "values":
        return "none"
    return "sigmoid" if units == 1 else "softmax"


def check_shared(module: nn.Module, shared: Mapping[str, str]) -> dict[str, str]:
    """``shared`` checked against ``module``: ``ConfigError`` unless every pair names two of its tensors of the same
    shape and dtype, and no tensor is both left out and the one another is filled from (so nothing chains or loops)."""
    tensors = dict(module.named_parameters(remove_duplicate=False)) | dict(module.named_buffers(remove_duplicate=False))
    checked: dict[str, str] = {}
    for alias, target in shared.items():
        if not isinstance(alias, str) or not isinstance(target, str) or alias not in tensors or target not in tensors:
            raise ConfigError(f"shared tensor {str(alias)[:80]!r} -> {str(target)[:80]!r} does not name two tensors "
                              "of the ensemble")
        if target in shared or alias == target:
            raise ConfigError(f"shared tensor {alias[:80]!r} refers to {target[:80]!r}, which is itself a reference; "
                              "a reference must name a stored tensor")
        mine, theirs = tensors[alias], tensors[target]
        if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
            raise ConfigError(f"shared tensor {alias[:80]!r} is {mine.dtype}{list(mine.shape)} but {target[:80]!r} is "
                              f"{theirs.dtype}{list(theirs.shape)}; only identical tensors can be stored once")
        checked[alias] = target
    return checked


def _leave_out_shared(module: "Ensemble", state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for alias in module.live_shared():
        state.pop(prefix + alias, None)


def _fill_in_shared(module: "Ensemble", state: dict[str, Any], prefix: str, *rest: Any) -> None:
    for alias, target in module.shared.items():
        if prefix + alias not in state and prefix + target in state:
            state[prefix + alias] = state[prefix + target]  # the same tensor: shared memory, not a copy


def _tie_shared(module: "Ensemble", incompatible_keys: Any) -> None:
    """Make each filled-in tensor the very ``Parameter`` (or buffer) it was filled from, so that exporters (ONNX)
    and ``named_parameters`` see one tensor, as the file stores one."""
    for alias, target in module.shared.items():
        owner_name, _, leaf = alias.rpartition(".")
        target_owner, _, target_leaf = target.rpartition(".")
        owner, source = module.get_submodule(owner_name), module.get_submodule(target_owner)
        table = "_parameters" if leaf in owner._parameters else "_buffers"
        mine, theirs = getattr(owner, table).get(leaf), getattr(source, table).get(target_leaf)
        if (mine is not None and theirs is not None and mine is not theirs and not mine.is_meta
                and mine.data_ptr() == theirs.data_ptr() and mine.shape == theirs.shape
                and mine.stride() == theirs.stride() and mine.dtype == theirs.dtype):
            getattr(owner, table)[leaf] = theirs


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


__all__ = ["ACTIVATIONS", "CLASSIFIER_ONLY", "METHODS", "OUTPUTS", "Ensemble", "check_members", "check_shared",
           "normalised_weights", "stacked_activation"]

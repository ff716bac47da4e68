"""Regularizers: penalty terms the training loop adds to the loss at every step.

A regularizer is the seam for penalties that depend on the weights rather than on the batch: L2-SP
(``L2Toward`` here), and later anything else fine-tuning needs. It carries state through
``state_dict``/``load_state_dict`` so that a resumed run computes the same penalty as the run it
continues. This module imports only torch, the standard library and ``modelkeep.errors``; it never
reads or writes a file (the reference weights arrive as tensors).
"""
from __future__ import annotations

import fnmatch
import hashlib
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch

from ..errors import ConfigError

__all__ = ["L2Toward", "Regularizer", "total_penalty"]


@runtime_checkable
class Regularizer(Protocol):
    """A penalty added to the training loss at every step; stateful so that it survives a resume.

    Call order, per run:

    1. built by the caller (before ``fit``), with whatever reference it needs;
    2. on resume only: ``load_state_dict(state)`` with what ``state_dict()`` returned when the
       checkpoint was taken;
    3. every training step: ``loss = loss + penalty(model)`` (through ``total_penalty``), inside the
       autograd graph, before ``backward``; ``model`` is the *unwrapped* module, so parameter names
       are those of ``model.named_parameters()``;
    4. at every checkpoint: ``state_dict()``, which returns tensors, numbers, strings, ``None``,
       lists, tuples and dicts only (it is stored as JSON plus tensors, never pickled).

    A worked example, an L1 penalty on the weights of one layer (names are glob patterns):

    >>> import fnmatch, torch
    >>> class L1(Regularizer):
    ...     def __init__(self, strength, pattern="*"):
    ...         self.strength, self.pattern = strength, pattern
    ...     def penalty(self, model):
    ...         terms = [p.abs().sum() for name, p in model.named_parameters()
    ...                  if p.requires_grad and fnmatch.fnmatchcase(name, self.pattern)]
    ...         return self.strength * torch.stack(terms).sum()
    ...     def state_dict(self):
    ...         return {"strength": self.strength}
    ...     def load_state_dict(self, state):
    ...         self.strength = state["strength"]
    >>> model = torch.nn.Linear(2, 1)
    >>> with torch.no_grad():
    ...     _ = model.weight.fill_(-1.0)
    >>> L1(0.5, "weight").penalty(model).item()
    1.0
    """

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """The penalty for the model's current weights: a scalar tensor that autograd can differentiate."""
        ...

    def state_dict(self) -> dict[str, Any]:
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...


def total_penalty(regularizers: Sequence[Regularizer], model: torch.nn.Module) -> torch.Tensor | None:
    """The sum of every regularizer's penalty on ``model``, or ``None`` when there are none.

    ``None`` lets the loop skip the addition entirely, so a run without regularizers computes
    exactly the loss it computed before this seam existed.
    """
    if not regularizers:
        return None
    total = regularizers[0].penalty(model)
    for regularizer in regularizers[1:]:
        total = total + regularizer.penalty(model)
    return total


def _fingerprint(reference: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes: what a resume checks instead of storing ``w0`` again."""
    hasher = hashlib.sha256()
    for name in sorted(reference):
        tensor = reference[name].detach().cpu().contiguous()
        hasher.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return hasher.hexdigest()


class L2Toward:
    """``alpha / 2 · Σ ‖w − w₀‖²``: pulls the chosen parameters toward reference weights ``w₀`` (L2-SP).

    ``reference`` maps parameter names (those of ``model.named_parameters()``) to ``w₀``, typically the
    state dict of the pretrained model the fine-tune starts from; it is copied at construction, so
    passing the live ``model.state_dict()`` is safe. ``names`` are glob patterns selecting which
    parameters are pulled (default: all of them). A selected parameter without an entry in
    ``reference`` is new (a replaced head, say) and is not pulled; frozen parameters
    (``requires_grad=False``) are skipped, since they cannot move. The gradient of the penalty is
    ``alpha · (w − w₀)``.

    The checkpointed state is ``alpha``, the patterns and a SHA-256 fingerprint of ``w₀`` — not ``w₀``
    itself, which stays in the file it came from: a resume rebuilds ``L2Toward`` from the same base
    weights, and ``load_state_dict`` refuses different ones.

    A worked example: a layer one unit away from its reference in each of its three weights and
    bias entries has ``0.1 / 2 · 3 = 0.15`` of penalty.

    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> l2sp = L2Toward(model.state_dict(), alpha=0.1)
    >>> l2sp.penalty(model).item()
    0.0
    >>> with torch.no_grad():
    ...     for p in model.parameters():
    ...         _ = p.add_(1.0)
    >>> round(l2sp.penalty(model).item(), 6)
    0.15
    """

    def __init__(self, reference: Mapping[str, torch.Tensor], alpha: float, *,
                 names: Sequence[str] | None = None) -> None:
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha >= 0):
            raise ConfigError(f"L2Toward: alpha must be a number >= 0, got {alpha!r}")
        if isinstance(names, str):
            names = (names,)
        self.alpha = float(alpha)
        self.names: tuple[str, ...] | None = tuple(names) if names is not None else None
        self._reference = {name: tensor.detach().clone() for name, tensor in reference.items()
                           if isinstance(tensor, torch.Tensor)}
        if not self._reference:
            raise ConfigError("L2Toward: the reference has no tensors; pass the pretrained model's state_dict()")
        self.reference_sha256 = _fingerprint(self._reference)
        self._checked = False

    def _selected(self, name: str) -> bool:
        return self.names is None or any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names)

    def _pairs(self, model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
        """``(name, parameter)`` of every selected parameter that has a reference; checked on the first call."""
        pairs = [(name, p) for name, p in model.named_parameters() if name in self._reference and self._selected(name)]
        if not self._checked:
            if not pairs:
                shown = ", ".join(list(self._reference)[:4])
                raise ConfigError(f"L2Toward: no parameter of the model is both selected by {self.names or '*'!r} "
                                  f"and present in the reference (reference names look like {shown}); "
                                  "check the patterns or pass the state dict of the model being fine-tuned")
            for name, p in pairs:
                if self._reference[name].shape != p.shape:
                    raise ConfigError(f"L2Toward: parameter {name!r} has shape {tuple(p.shape)} but its reference "
                                      f"has {tuple(self._reference[name].shape)}; leave it out with names=...")
            self._checked = True
        return pairs

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        terms = []
        device = None
        for name, p in self._pairs(model):
            device = p.device
            if not p.requires_grad:
                continue
            w0 = self._reference[name]
            if w0.device != p.device or w0.dtype != p.dtype:
                # keep one copy only, where the parameter lives
                w0 = self._reference[name] = w0.to(device=p.device, dtype=p.dtype)
            terms.append((p - w0).pow(2).sum())
        if not terms:
            return torch.zeros((), device=device)
        return (self.alpha / 2) * torch.stack(terms).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "names": list(self.names) if self.names is not None else None,
                "reference_sha256": self.reference_sha256}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("reference_sha256")
        if saved != self.reference_sha256:
            raise ConfigError("L2Toward: the reference weights differ from those the checkpoint was trained toward "
                              f"(fingerprint {str(saved)[:12]}... vs {self.reference_sha256[:12]}...); resume with "
                              "the same base model")
        names = state.get("names")
        if (tuple(names) if names is not None else None) != self.names:
            raise ConfigError(f"L2Toward: the checkpoint selected parameters {names!r} but this run selects "
                              f"{list(self.names) if self.names is not None else None!r}; resume with the same names")
        self.alpha = float(state["alpha"])

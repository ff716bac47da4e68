"""L2-SP: ``alpha/2 ‖w − w₀‖²`` on the pretrained weights plus ``beta/2 ‖w‖²`` on the new ones (a ``Regularizer``).

``w₀`` are the base model's weights as the fine-tune found them (read from the base file); they are
held in memory for the run and never written again: a checkpoint records the base's content hash,
``alpha``, ``beta`` and a fingerprint of ``w₀`` (``L2Toward``'s), and a resume, which re-reads the
base, refuses a different one. "New" weights are those the base did not have: a replaced head, or
parameters whose names or shapes are not in the base. Built on ``train.regularizers.L2Toward``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError
from ..train.regularizers import L2Toward

__all__ = ["L2SP"]


class L2SP:
    """The L2-SP penalty of a fine-tune (Li et al., 2018), as a ``Regularizer``.

    ``reference``: ``w₀`` by parameter name (the base's state dict); ``new``: names of parameters that
    are new (pulled toward zero with ``beta``); ``base``: the base's content hash, when it came from a
    file, which the state records. Frozen parameters cost nothing: they cannot move.

    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> penalty = L2SP(model.state_dict(), alpha=0.1)
    >>> penalty.penalty(model).item()
    0.0
    """

    def __init__(self, reference: Mapping[str, torch.Tensor], alpha: float, beta: float = 0.0, *,
                 new: Sequence[str] = (), base: str | None = None) -> None:
        for name, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"L2-SP {name} must be a number >= 0, got {value!r}")
        self.new = tuple(new)
        kept = {name: tensor for name, tensor in reference.items() if name not in set(self.new)}
        self.toward = L2Toward(kept, alpha=float(alpha), names=sorted(kept)) if kept and alpha > 0 else None
        self.alpha, self.beta, self.base = float(alpha), float(beta), base
        self.reference_sha256 = self.toward.reference_sha256 if self.toward is not None else None

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        total = self.toward.penalty(model) if self.toward is not None else None
        if self.beta > 0 and self.new:
            wanted = set(self.new)
            terms = [p.pow(2).sum() for name, p in model.named_parameters() if name in wanted and p.requires_grad]
            if terms:
                fresh = (self.beta / 2) * torch.stack(terms).sum()
                total = fresh if total is None else total + fresh
        if total is None:
            return torch.zeros((), device=next(model.parameters()).device)
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base, "alpha": self.alpha, "beta": self.beta, "new": list(self.new),
                "reference_sha256": self.reference_sha256}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("base") != self.base or state.get("reference_sha256") != self.reference_sha256:
            raise ConfigError(f"L2-SP: this run starts from another base ({str(self.base)[:24]}) than the "
                              f"checkpoint's ({str(state.get('base'))[:24]}); resume from the same base model")
        if (float(state["alpha"]), float(state["beta"])) != (self.alpha, self.beta) or \
                list(state.get("new", [])) != list(self.new):
            raise ConfigError(f"L2-SP: the checkpoint used alpha={state['alpha']}, beta={state['beta']}; "
                              f"this run asks alpha={self.alpha}, beta={self.beta}; resume with the same settings")

"""BatchNorm (and dropout) during a fine-tune: frozen statistics, training statistics, or re-estimated on new data.

``requires_grad=False`` stops a BatchNorm's affine weights, not its running statistics: in training
mode every forward pass moves them. So a fine-tune decides with mode policies (``train.modes``):

* always, ``FrozenLayersKeepEval``: a frozen layer runs as at inference — a top-level layer whose
  parameters are all frozen stays in eval mode (statistics fixed, dropout off), as does any BatchNorm
  whose own parameters are all frozen; frozen layers are bit-identical after training, buffers
  included. It reads ``requires_grad`` at each mode switch, and the unfreezing schedule switches a
  layer back to training mode the moment it unfreezes it (``release_unfrozen``);
* ``"train"``: nothing more — BatchNorms of layers that train update their statistics;
* ``"frozen"``: every BatchNorm in eval mode too (``FrozenBatchNorm``): statistics never move;
* ``"reestimate"``: ``reestimate_statistics`` first recomputes every running mean and variance on the
  new training data (the exact average over one ordered pass, no gradients), then they are held as
  with ``"frozen"``.

Validation and evaluation switch the model to eval and back through the same policies.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import torch

from ..train.modes import FrozenBatchNorm
from ..train.param_groups import top_level_layers

__all__ = ["FrozenLayersKeepEval", "batchnorm_policies", "batch_norms", "reestimate_statistics"]

_BATCH_NORM = torch.nn.modules.batchnorm._BatchNorm


def batch_norms(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, _BATCH_NORM)]


def _all_frozen(module: torch.nn.Module, *, recurse: bool = False) -> bool:
    own = list(module.parameters(recurse=recurse))
    return bool(own) and not any(p.requires_grad for p in own)


class FrozenLayersKeepEval:
    """A ``ModePolicy``: while training, a frozen layer runs as at inference — a top-level layer whose parameters
    are all frozen is kept in eval mode as a whole (its BatchNorm statistics do not move, its dropout is off),
    and so is any BatchNorm whose own parameters are all frozen. Reads ``requires_grad`` at every mode switch."""

    def apply(self, model: torch.nn.Module, training: bool) -> None:
        if not training:
            return
        for _, layer in top_level_layers(model):
            if _all_frozen(layer, recurse=True):
                layer.eval()
        for _, module in batch_norms(model):
            if _all_frozen(module):
                module.eval()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return "FrozenLayersKeepEval()"


def batchnorm_policies(mode: str) -> tuple[Any, ...]:
    """The mode policies of a BatchNorm mode (``"train"``, ``"frozen"`` or ``"reestimate"``): frozen layers run as at
    inference in every mode; ``"frozen"`` and ``"reestimate"`` also hold every BatchNorm's statistics."""
    if mode == "train":
        return (FrozenLayersKeepEval(),)
    return (FrozenLayersKeepEval(), FrozenBatchNorm())


def release_unfrozen(model: torch.nn.Module, names: Iterable[str], policies: Sequence[Any]) -> None:
    """Switch the top-level layers holding ``names`` back to training mode, then re-apply ``policies`` — what the
    next ``set_mode`` would do, done at once so that a run and its resume switch modes at the same step."""
    if not model.training:
        return
    wanted = set(names)
    for prefix, layer in top_level_layers(model):
        if any(prefix == "" or n.startswith(prefix + ".") for n in wanted):
            layer.train()
    for policy in policies:
        policy.apply(model, True)


class _Moments:
    """Running sums of a BatchNorm's inputs per channel (float64): the exact mean and variance over all batches."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, None, None

    def __call__(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        total, squares = x.sum(dims), x.pow(2).sum(dims)
        self.count += x.numel() // x.shape[1]
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares

    def store(self, module: Any, batches: int) -> None:
        if self.total is None or self.count < 2:
            return
        mean = self.total / self.count
        variance = (self.squares - self.count * mean.pow(2)) / (self.count - 1)  # unbiased, as BatchNorm keeps it
        module.running_mean.copy_(mean.to(module.running_mean.dtype))
        module.running_var.copy_(variance.clamp_min(0).to(module.running_var.dtype))
        if module.num_batches_tracked is not None:
            module.num_batches_tracked.fill_(batches)


def _no_single_rows(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The batches, with a trailing batch of one row joined to the one before (training-mode BatchNorm needs two)."""
    held = None
    for batch in batches:
        if held is not None:
            if len(batch) == 1:
                batch, held = torch.cat([held, batch]), None
                yield batch
                continue
            yield held
        held = batch
    if held is not None:
        yield held


@torch.no_grad()
def reestimate_statistics(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Recompute every BatchNorm's running statistics on ``batches`` (inputs only, one pass, no gradients).

    Each BatchNorm runs in training mode (normalizing with the batch's own statistics, as it will while
    training) and every other module in eval mode (dropout off); the mean and unbiased variance of each
    BatchNorm's inputs are accumulated over all batches — the cumulative average of the whole pass,
    weighted by rows, not a momentum average — and become its running statistics. Modes are put back.
    Returns the number of BatchNorms re-estimated.
    """
    norms = [module for _, module in batch_norms(model) if module.track_running_stats]
    if not norms:
        return 0
    modes = {module: module.training for module in model.modules()}
    moments = [_Moments() for _ in norms]
    hooks = [module.register_forward_pre_hook(moment) for module, moment in zip(norms, moments)]
    count = 0
    try:
        model.eval()
        for module in norms:
            module.train()
        for inputs in _no_single_rows(batches):
            model(inputs)
            count += 1
        for module, moment in zip(norms, moments):
            moment.store(module, count)
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
    return len(norms)

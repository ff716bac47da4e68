"""Process strategies: how many processes train one model, and what each of them does.

The loop asks its ``ProcessStrategy`` everything it would otherwise assume about being alone: the
module to run forward (``wrap``), the model to read and save (``unwrap``), which samples of the
epoch this process sees (``shard``), whether this process writes files (``is_coordinator``) and
when to wait for the others (``barrier``). ``SingleProcess`` is the default and changes nothing; a
multi-process strategy (DistributedDataParallel) plugs in here later. This module imports only
torch, the standard library and ``modelkeep.errors``; it never starts processes itself.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..errors import ConfigError

__all__ = ["ProcessStrategy", "SingleProcess", "shard_indices", "unwrap_model"]


@runtime_checkable
class ProcessStrategy(Protocol):
    """Where one training process stands among all of them, in two pairs of methods and three facts.

    The model: ``wrap(model)`` returns the module the loop runs forward and backward (for DDP, the
    ``DistributedDataParallel`` wrapper); ``unwrap(module)`` gives the user's model back, which the
    loop reads for the loss wiring (final activation), signatures and saving.
    The processes: ``shard(indices)`` keeps this process's part of the epoch's ``(seed, epoch)``
    permutation; ``barrier()`` waits until every process reaches it. ``rank``, ``world_size`` and
    ``is_coordinator`` (the one process that writes checkpoints, the model file and progress) are
    plain attributes. Wrap and unwrap are two methods rather than one because they are inverses
    the loop needs at different times; the three facts cost no call.

    Call order: ``wrap`` once after the model is on its device and before the optimizer sees it;
    ``shard`` at every epoch start on the full permutation; ``unwrap`` whenever the model itself is
    needed; ``barrier`` before and after the coordinator writes what the others will read.

    A worked example, a strategy that runs the model compiled (one process):

    >>> class Compiled(ProcessStrategy):
    ...     rank, world_size, is_coordinator = 0, 1, True
    ...     def wrap(self, model): return torch.compile(model)
    ...     def unwrap(self, module): return unwrap_model(module)
    ...     def shard(self, indices): return indices
    ...     def barrier(self): pass
    >>> model = torch.nn.Linear(2, 1)
    >>> Compiled().unwrap(Compiled().wrap(model)) is model
    True
    """

    rank: int
    world_size: int
    is_coordinator: bool

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        ...

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        ...

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        ...

    def barrier(self) -> None:
        ...


def unwrap_model(module: torch.nn.Module) -> torch.nn.Module:
    """The model inside torch's own wrappers, however nested: ``DistributedDataParallel`` and
    ``DataParallel`` (``.module``) and ``torch.compile``'s ``OptimizedModule`` (``._orig_mod``).

    Only those wrapper classes are unwrapped: a user's model with an attribute named ``module`` is
    a model, not a wrapper.
    """
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while True:
        if isinstance(module, wrappers):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), torch.nn.Module) and _is_compiled(module):
            module = module._orig_mod
        else:
            return module


def _is_compiled(module: torch.nn.Module) -> bool:
    # OptimizedModule's home moved between torch versions; its class name and _orig_mod are stable.
    return type(module).__name__ == "OptimizedModule"


def shard_indices(indices: torch.Tensor, rank: int, world_size: int, *, drop_remainder: bool = False) -> torch.Tensor:
    """This rank's part of an epoch's indices: ``indices[rank::world_size]``, every rank the same count.

    When ``len(indices)`` is not a multiple of ``world_size``, the default pads by wrapping around
    (as ``torch.utils.data.DistributedSampler`` does): the first indices are appended again until
    the length is a multiple, so a few samples are seen twice in that epoch and every rank runs the
    same number of steps (collective operations need that). With ``drop_remainder=True`` the last
    ``len % world_size`` indices are left out of the epoch instead. The order depends only on
    ``indices`` (the ``(seed, epoch)`` permutation), never on timing.

    >>> shard_indices(torch.arange(5), 1, 2)
    tensor([1, 3, 0])
    >>> shard_indices(torch.arange(5), 1, 2, drop_remainder=True)
    tensor([1, 3])
    """
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ConfigError(f"world_size must be an integer >= 1, got {world_size!r}")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ConfigError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
    n = len(indices)
    if drop_remainder:
        indices = indices[: n - n % world_size]
    elif n % world_size and n:
        padding = world_size - n % world_size
        repeats = -(-padding // n)  # fewer indices than ranks: wrap around more than once
        indices = torch.cat([indices, indices.repeat(repeats)[:padding]])
    return indices[rank::world_size]


class SingleProcess:
    """The default strategy: one process, the model as it is, every index, no waiting.

    >>> strategy = SingleProcess()
    >>> model = torch.nn.Linear(2, 1)
    >>> strategy.wrap(model) is model, strategy.is_coordinator, strategy.shard(torch.arange(3)).tolist()
    (True, True, [0, 1, 2])
    """

    rank = 0
    world_size = 1
    is_coordinator = True

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """Also strips the torch wrappers a user may have applied before ``fit`` (``torch.compile``)."""
        return unwrap_model(module)

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        return indices

    def barrier(self) -> None:
        """One process waits for no one."""

    def __repr__(self) -> str:
        return "SingleProcess()"

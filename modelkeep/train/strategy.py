"""Process strategies: how many processes train one model, and what each of them does.

The loop asks its ``ProcessStrategy`` everything it would otherwise assume about being alone: the
module to run forward (``wrap``), the model to read and save (``unwrap``), which samples of the
epoch this process sees (``shard``), whether this process writes files (``is_coordinator``) and
when to wait for the others (``barrier``). ``SingleProcess`` is the default and changes nothing; a
multi-process strategy (``distributed.DataParallel``, ``distributed.FullyShardedParallel``) plugs
in here. This module imports only torch, the standard library and ``modelkeep.errors``; it never
starts processes itself and never imports ``torch.distributed``.

Batch semantics, for every strategy: ``batch_size`` is the *global* batch, the samples one
optimizer step sees across all processes; each process takes ``batch_size / world_size`` of them
(``local_batch_size``). Global batch ``b`` is therefore ``order[b*B:(b+1)*B]`` of the epoch's
permutation whatever the number of processes, so a run on 2 processes computes the same gradients
as one process (up to the order of floating-point sums), and a checkpoint's batch index means the
same samples consumed on 1, 2 or 3 processes: a resume may change the number of processes.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..errors import ConfigError

__all__ = ["ProcessStrategy", "STRATEGY_NAMES", "SingleProcess", "any_process", "check_strategy_name",
           "local_batch_size", "shard_indices", "unwrap_model", "whole_model"]

STRATEGY_NAMES = ("auto", "ddp", "fsdp")  # the config's `strategy:` values (distributed.strategy_from_environment)


@runtime_checkable
class ProcessStrategy(Protocol):
    """Where one training process stands among all of them, in five methods and three facts.

    The model: ``wrap(model)`` returns the module the loop runs forward and backward (for DDP, the
    ``DistributedDataParallel`` wrapper); ``unwrap(module)`` gives the user's model back, which the
    loop reads for the loss wiring (final activation), signatures and saving.
    The processes: ``shard(indices)`` keeps this process's part of the epoch's ``(seed, epoch)``
    permutation; ``barrier()`` waits until every process reaches it; ``gather(tensor)`` returns
    every process's ``tensor`` (same shape everywhere) stacked on a new first dimension in rank
    order, the one collective the loop needs for its numbers (reduced metrics, agreed decisions:
    summing a gathered tensor in rank order gives the same bits on every process, which an
    all-reduce does not promise). ``rank``, ``world_size`` and
    ``is_coordinator`` (the one process that writes checkpoints, the model file and progress) are
    plain attributes. Wrap and unwrap are two methods rather than one because they are inverses
    the loop needs at different times; the three facts cost no call.

    Call order: ``wrap`` once after the model is on its device and before the optimizer sees it;
    ``shard`` at every epoch start on the full permutation; ``unwrap`` whenever the model itself is
    needed; ``barrier`` before and after the coordinator writes what the others will read;
    ``gather`` by every process at the same point (it is collective).

    A worked example, a strategy that runs the model compiled (one process):

    >>> class Compiled(ProcessStrategy):
    ...     rank, world_size, is_coordinator = 0, 1, True
    ...     def wrap(self, model): return torch.compile(model)
    ...     def unwrap(self, module): return unwrap_model(module)
    ...     def shard(self, indices): return indices
    ...     def barrier(self): pass
    ...     def gather(self, tensor): return tensor.unsqueeze(0)
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

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
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

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unsqueeze(0)

    def __repr__(self) -> str:
        return "SingleProcess()"


def any_process(strategy: ProcessStrategy, *flags: bool) -> tuple[bool, ...]:
    """Each flag, true when it is true on any process (collective when there are several).

    Decisions that start a collective (save a checkpoint now, stop on a signal) must be taken by
    every process at the same step, or one waits at a barrier the others never reach. A time
    trigger or a SIGTERM that reached one process first is made common here.

    >>> any_process(SingleProcess(), True, False)
    (True, False)
    """
    if strategy.world_size == 1:
        return tuple(bool(flag) for flag in flags)
    gathered = strategy.gather(torch.tensor([float(bool(flag)) for flag in flags], device=_device_of(strategy)))
    return tuple(bool(value) for value in gathered.amax(dim=0).tolist())


def _device_of(strategy: ProcessStrategy) -> torch.device:
    return torch.device(getattr(strategy, "device", "cpu"))


def local_batch_size(batch_size: int, world_size: int, train_samples: int) -> int:
    """How many samples each process puts in a batch: the global ``batch_size`` over ``world_size``.

    Full-batch training (``batch_size`` at least the training set) gives each process its whole
    shard. Any other batch size must divide evenly, so that every global batch holds exactly
    ``batch_size`` samples and means the same thing on any number of processes.

    >>> local_batch_size(64, 2, 1000), local_batch_size(1000, 3, 1000)
    (32, 334)
    >>> local_batch_size(64, 3, 1000)
    Traceback (most recent call last):
    ...
    modelkeep.errors.ConfigError: batch_size 64 is the global batch and must divide evenly over 3 processes ...
    """
    if world_size == 1:
        return batch_size
    if batch_size >= train_samples:
        return -(-train_samples // world_size)
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        raise ConfigError(
            f"batch_size {batch_size} is the global batch and must divide evenly over {world_size} processes "
            f"(each takes batch_size / {world_size}); use {lower or world_size} or {lower + world_size}")
    return batch_size // world_size


def check_strategy_name(name: object) -> str:
    """The config's ``strategy:`` value, checked: ``auto`` (DDP under torchrun), ``ddp`` or ``fsdp``."""
    if name is None:
        return "auto"
    if name not in STRATEGY_NAMES:
        shown = repr(name)[:60]
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGY_NAMES)}, got {shown}; 'auto' runs "
                          "DistributedDataParallel under torchrun and one process otherwise")
    return str(name)


def whole_model(strategy: ProcessStrategy, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with all of its weights in this process, for the result and the model file: a strategy that
    shards the parameters gathers them (its ``full_model``, collective); any other returns ``model``."""
    gather = getattr(strategy, "full_model", None)
    return gather(model) if callable(gather) else model

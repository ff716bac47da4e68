"""Training on several processes (one machine or many) under ``torchrun``: the multi-process strategies.

``torchrun --nproc-per-node 2 -m modelkeep train CONFIG`` starts two processes; each reads
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) in ``strategy_from_environment``, joins the process group (gloo on CPU, NCCL on
CUDA with one device per ``LOCAL_RANK``) and trains its shard of every epoch. Two strategies plug
into the ``strategy.ProcessStrategy`` seam:

* ``DataParallel`` (DistributedDataParallel): every process holds the whole model, gradients are
  averaged across processes after each backward. For models that fit a device. The state is the
  same on every process, so the coordinator's single-file checkpoint is the whole run.
* ``FullyShardedParallel`` (FSDP2, ``torch.distributed.fsdp.fully_shard``): parameters, gradients
  and optimizer state are split across processes and gathered layer by layer for the forward and
  backward. For models that do not fit one device. Its checkpoints are sharded: every process
  writes its part (``multiprocess_checkpoints.ShardedCheckpoints``), resumable on any number of processes.

``training_processes(name)`` is the context a run lives in: it makes the strategy (one process when
not under torchrun, so the same config and command run anywhere) and destroys the process group it
created at the end, also on an error. ``batch_size`` is the global batch (``strategy.local_batch_size``).

This module imports ``torch.distributed`` only when a strategy is made; it never spawns processes
(torchrun does) and never writes a file.
"""
from __future__ import annotations

import contextlib
import copy
import os
from typing import Any, Iterator

import torch

from ..errors import ConfigError
from .strategy import ProcessStrategy, SingleProcess, check_strategy_name, shard_indices, unwrap_model

__all__ = ["DataParallel", "FullyShardedParallel", "TorchrunEnvironment", "run_folder", "strategy_from_environment",
           "training_processes"]

_TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class TorchrunEnvironment:
    """What torchrun tells each process it starts (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, the rendezvous).

    ``present`` is false outside torchrun (no ``WORLD_SIZE``/``RANK``): then a run is one process.
    """

    def __init__(self, environ: Any = None) -> None:
        environ = os.environ if environ is None else environ
        self.present = "WORLD_SIZE" in environ and "RANK" in environ
        try:
            self.rank = int(environ.get("RANK", 0))
            self.world_size = int(environ.get("WORLD_SIZE", 1))
            self.local_rank = int(environ.get("LOCAL_RANK", self.rank))
        except ValueError:
            shown = {key: environ.get(key) for key in _TORCHRUN_KEYS[:3]}
            raise ConfigError(f"torchrun's RANK, WORLD_SIZE and LOCAL_RANK must be integers, got {shown}") from None
        if self.present and not (self.world_size >= 1 and 0 <= self.rank < self.world_size):
            raise ConfigError(f"RANK={self.rank} is not a rank of WORLD_SIZE={self.world_size}; start the run "
                              "with torchrun (it sets both)")
        if self.present and self.world_size > 1 and not {"MASTER_ADDR", "MASTER_PORT"} <= set(environ):
            raise ConfigError("WORLD_SIZE is set but MASTER_ADDR/MASTER_PORT are not: start the processes with "
                              "torchrun (torchrun --nproc-per-node N -m modelkeep train CONFIG), which sets them")


class _Distributed:
    """What both multi-process strategies share: their place in the group, sharding, barrier, gather."""

    def __init__(self, *, rank: int, world_size: int, device: torch.device) -> None:
        self.rank, self.world_size = rank, world_size
        self.is_coordinator = rank == 0
        self.device = device

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        return shard_indices(indices, self.rank, self.world_size)

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.stack(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size}, device={str(self.device)!r})"


class DataParallel(_Distributed):
    """DistributedDataParallel: the whole model on every process, gradients averaged after each backward.

    The model the loop reads and saves is the user's own (``unwrap``); every process holds the same
    weights and optimizer state, so the coordinator alone writes checkpoints and the model file.
    """

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError("the model has no trainable parameter; DistributedDataParallel has nothing to "
                              "synchronize (unfreeze some, or train on one process)")
        device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
        # broadcast_buffers: BatchNorm running statistics follow the coordinator's, as in one process.
        return DistributedDataParallel(model, device_ids=device_ids)

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return unwrap_model(module)


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules FSDP2 shards one by one, innermost first: every module that holds parameters of its own
    (a Linear, a convolution, an embedding), but not the root (sharded last, with whatever is left) and not
    the containers that have no forward of their own (``ModuleDict``, ``ModuleList``)."""
    containers = (torch.nn.ModuleDict, torch.nn.ModuleList, torch.nn.ParameterDict, torch.nn.ParameterList)
    units = [module for module in model.modules() if module is not model and not isinstance(module, containers)
             and any(True for _ in module.parameters(recurse=False))]
    return units[::-1]


class FullyShardedParallel(_Distributed):
    """FSDP2 (``fully_shard``): every module holding parameters of its own becomes a shard unit, then the root.

    Parameters become DTensors split across processes; the forward and backward gather one unit
    at a time. ``unwrap`` returns the same (sharded) module: ``fully_shard`` works in place.
    ``full_model(module)`` gives an ordinary model with the whole weights (collective), what the
    result and the model file carry.
    """

    replicated = False  # each process holds a part of the state: fit checkpoints it sharded

    def __init__(self, *, rank: int, world_size: int, device: torch.device) -> None:
        super().__init__(rank=rank, world_size=world_size, device=device)
        self.template: torch.nn.Module | None = None

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # An unsharded twin without storage, filled with the gathered weights at the end (full_model).
        self.template = copy.deepcopy(model).to("meta")
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        for unit in shard_units(model):
            fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def full_model(self, module: torch.nn.Module) -> torch.nn.Module:
        """An ordinary (unsharded) copy of ``module`` holding the whole weights, on every process."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if self.template is None:
            raise ConfigError("full_model needs the module this strategy wrapped")
        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False))
        model = copy.deepcopy(self.template)
        full = {key: (value.full_tensor() if hasattr(value, "full_tensor") else value).detach().clone()
                for key, value in state.items()}
        model.load_state_dict(full, assign=True)
        return model.to(self.device)


def strategy_from_environment(name: str | None = "auto", *, environ: Any = None) -> ProcessStrategy:
    """The strategy for this process: ``SingleProcess`` outside torchrun (whatever ``name``), else ``DataParallel``
    for ``auto``/``ddp`` and ``FullyShardedParallel`` for ``fsdp``; joins the process group when needed.

    The backend is NCCL when CUDA is available (each process on device ``LOCAL_RANK``), else gloo.
    """
    name = check_strategy_name(name)
    env = TorchrunEnvironment(environ)
    if not env.present or env.world_size == 1 and name == "auto":
        return SingleProcess()
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; install one that does to train on "
                          "several processes")
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", env.local_rank % torch.cuda.device_count()), "nccl"
        torch.cuda.set_device(device)  # "cuda" in the settings means this process's device from now on
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=env.rank, world_size=env.world_size)
    kind = FullyShardedParallel if name == "fsdp" else DataParallel
    return kind(rank=env.rank, world_size=env.world_size, device=device)


@contextlib.contextmanager
def training_processes(name: str | None = "auto", *, environ: Any = None) -> Iterator[ProcessStrategy]:
    """The strategy of a run (``strategy_from_environment``); the process group it joined is destroyed at the end.

    >>> with training_processes("ddp", environ={}) as strategy:   # not under torchrun: one process
    ...     strategy
    SingleProcess()
    """
    import sys

    started = "torch.distributed" in sys.modules and _initialized()
    strategy = strategy_from_environment(name, environ=environ)
    succeeded = False
    try:
        yield strategy
        succeeded = True
    finally:
        if strategy.world_size > 1 and not started and _initialized():
            import torch.distributed as dist

            if succeeded:
                # Every rank leaves together: a rank tearing gloo down while another is still in its last
                # collective can abort the other at exit ("terminate called without an active exception").
                # Not after a failure, where the others may never arrive.
                strategy.barrier()
            dist.destroy_process_group()


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def run_folder(run_dir: Any, name: str | None, *, prepare: Any) -> Iterator[ProcessStrategy]:
    """``training_processes(name)`` for a run writing ``run_dir``: the coordinator alone calls ``prepare(run_dir)``
    (create it, refuse one it cannot write) and holds the folder's lock, before any data is read or step taken,
    so a second training on the folder is refused; the other processes never write there."""
    from ..io.lock import FolderLock

    with training_processes(name) as strategy:
        if not strategy.is_coordinator:
            yield strategy
            return
        prepare(run_dir)
        with FolderLock(run_dir, purpose="training run"):
            yield strategy

"""Feeding the loop: splits ready to iterate, each epoch's data order, and the batch plan.

In-memory data is moved to the device once and batches are gathered there by
index (no DataLoader, no collation). Streamed data (an ``ImageFolder``) goes
through a DataLoader whose sampler follows the same order.

The order of epoch ``e`` is a pure function of ``(seed, e)``
(``epoch_permutation``), so a run can resume at any ``(epoch, batch)`` with
nothing else about the data. A process strategy takes its shard of that order
(``indices[rank::world_size]`` when there are several processes), so each
process's order still depends only on ``(seed, epoch)``.

Nothing here reads the host copy of a device tensor: batching never makes a step wait.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import DataError

__all__ = ["BatchPlan", "PREPROCESSING_SAMPLE", "Split", "as_dataset", "epoch_batches", "epoch_permutation",
           "fit_preprocessing", "input_dtype", "is_streamed"]

PREPROCESSING_SAMPLE = 4096  # streamed training data: preprocessing is fitted on this many training images

Shard = Callable[[torch.Tensor], torch.Tensor]

# The dtypes an Input layer may declare; a model that declares nothing takes float32.
_INPUT_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "bool": torch.bool}


def input_dtype(model: Any) -> torch.dtype:
    """The dtype ``model`` takes as input: what its spec's Input layer declares (int64 token ids,
    float images), float32 for a model that does not say. Pass the unwrapped model."""
    spec = getattr(model, "spec", None)
    inputs = getattr(spec, "inputs", None) or ()
    declared = getattr(getattr(inputs[0].kind, "fields", None), "dtype", "float32") if inputs else "float32"
    return _INPUT_DTYPES.get(str(declared), torch.float32)


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of epoch ``epoch`` (0-based): a pure function of ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed((seed * 0x9E3779B1 + epoch * 0x85EBCA77 + 0x165667B1) % 2**63)
    return torch.randperm(n, generator=generator)


def is_streamed(dataset: Any) -> bool:
    return not isinstance(dataset, Dataset)


def as_dataset(data: Any, role: str, *, like: Any = None) -> Any:
    """``data`` when it is a modelkeep Dataset (or streams like one), a Dataset made from an ``(x, y)``
    pair of arrays (taking the task and class names of ``like``, the training set, so a class keeps
    its index in every split); None stays None."""
    if data is None:
        return None
    if isinstance(data, Dataset) or hasattr(data, "__getitem__") and hasattr(data, "y") and hasattr(data, "task"):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        from ..data.targets import dataset_from_arrays

        if like is None:
            return dataset_from_arrays(data[0], data[1], name=role)
        return dataset_from_arrays(data[0], data[1], name=role, task=like.task, labels=like.labels)
    raise DataError(f"{role} data must be a modelkeep Dataset or an (x, y) pair of arrays (see "
                    f"modelkeep.data.dataset_from_arrays), got {type(data).__name__}")


def fit_preprocessing(preprocessing: Any, train: Any, seed: int) -> None:
    """Fit ``preprocessing`` on the training split only (a seeded sample of it when it is streamed)."""
    if preprocessing is None:
        return
    sample = train.sample(PREPROCESSING_SAMPLE, seed) if is_streamed(train) else train.x
    preprocessing.fit(sample)
    if hasattr(preprocessing, "fit_targets"):
        preprocessing.fit_targets(train.y)


def _target_dtype(task: str, y: np.ndarray) -> torch.dtype:
    if task == "classification" and np.asarray(y).dtype.kind in "iu":
        return torch.int64
    return torch.float32


def _transform_targets(y: np.ndarray, preprocessing: Any) -> np.ndarray:
    if preprocessing is not None and hasattr(preprocessing, "transform_targets"):
        return preprocessing.transform_targets(y)
    return y


def _tensors(dataset: Dataset, preprocessing: Any, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x = dataset.x if preprocessing is None else preprocessing.transform(dataset.x)
    y = _transform_targets(dataset.y, preprocessing)
    x_t = torch.as_tensor(np.ascontiguousarray(x), dtype=dtype).to(device)  # cast on the host, then move
    y_t = torch.as_tensor(np.ascontiguousarray(y), dtype=_target_dtype(dataset.task, y)).to(device)
    return x_t, y_t


class _Collate:
    """Stacks streamed samples and applies the preprocessing to the whole batch (picklable for workers)."""

    def __init__(self, preprocessing: Any, task: str, dtype: torch.dtype = torch.float32) -> None:
        self.preprocessing = preprocessing
        self.task = task
        self.dtype = dtype

    def __call__(self, samples: list[tuple[np.ndarray, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.stack([s[0] for s in samples])
        y = np.asarray([s[1] for s in samples])
        if self.preprocessing is not None:
            x = self.preprocessing.transform(x)
        y = _transform_targets(y, self.preprocessing)
        return (torch.as_tensor(np.ascontiguousarray(x), dtype=self.dtype),
                torch.as_tensor(y, dtype=_target_dtype(self.task, y)))


class Split:
    """One split ready to iterate: tensors on the device, or a streamed dataset and its loader settings.
    Inputs take the model's input dtype (``input_dtype``): int64 token ids, float32 images and tables."""

    def __init__(self, dataset: Any, preprocessing: Any, device: torch.device, num_workers: int, *,
                 dtype: torch.dtype = torch.float32) -> None:
        self.dataset = dataset
        self.name = dataset.name
        self.task = dataset.task
        self.device = device
        self.streamed = is_streamed(dataset)
        self.num_workers = num_workers
        self.collate = _Collate(preprocessing, dataset.task, dtype)
        if not self.streamed:
            self.x, self.y = _tensors(dataset, preprocessing, device, dtype)

    def __len__(self) -> int:
        return len(self.dataset)

    def loader(self, indices: Sequence[int] | None, batch_size: int, seed: int = 0, epoch: int = 0):
        from torch.utils.data import DataLoader

        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return DataLoader(self.dataset, batch_size=batch_size, sampler=list(indices) if indices is not None else None,
                          collate_fn=self.collate, num_workers=self.num_workers, generator=generator,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every sample once, in order (for evaluation)."""
        if not self.streamed:
            for start in range(0, len(self.x), batch_size):
                yield self.x[start:start + batch_size], self.y[start:start + batch_size]
            return
        for xb, yb in self.loader(None, batch_size):
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

    def shard_batches(self, batch_size: int, rank: int, world_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Samples ``rank, rank + world_size, ...`` once each (one process's part of an evaluation; no padding,
        so the parts of all processes hold every sample exactly once)."""
        if world_size == 1:
            yield from self.batches(batch_size)
            return
        if not self.streamed:
            x, y = self.x[rank::world_size], self.y[rank::world_size]
            for start in range(0, len(x), batch_size):
                yield x[start:start + batch_size], y[start:start + batch_size]
            return
        for xb, yb in self.loader(range(rank, len(self), world_size), batch_size):
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)


@dataclass(frozen=True)
class BatchPlan:
    """How one process's share of an epoch is cut: ``samples`` in batches of ``batch_size``,
    ``accumulate`` batches per optimizer step (the last group of an epoch may be shorter)."""

    samples: int
    batch_size: int
    accumulate: int = 1
    drop_last: bool = False

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (forward/backward passes; optimizer steps are ``optimizer_steps_per_epoch``)."""
        n, size = self.samples, self.batch_size
        return n // size if self.drop_last and n >= size else math.ceil(n / size)

    @property
    def optimizer_steps_per_epoch(self) -> int:
        return math.ceil(self.steps_per_epoch / self.accumulate)

    def group_scale(self, batch: int, size: int) -> float:
        """Loss scale for gradient accumulation: this batch's share of the samples in its accumulation group."""
        if self.accumulate == 1:
            return 1.0
        first = (batch // self.accumulate) * self.accumulate
        last = min(first + self.accumulate, self.steps_per_epoch)
        samples = min(last * self.batch_size, self.samples) - first * self.batch_size
        return size / samples


def epoch_batches(split: Split, plan: BatchPlan, *, seed: int, epoch: int, start_batch: int,
                  shard: Shard) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(batch index, x, y)`` for the batches ``start_batch..`` of ``epoch``, in its seeded order
    (this process's shard of it)."""
    size, n = plan.batch_size, len(split)
    if not split.streamed and size >= n and plan.samples == n:
        # One batch of everything: the order does not change the gradient, so skip the gather.
        if start_batch == 0:
            yield 0, split.x, split.y
        return
    order = shard(epoch_permutation(seed, epoch, n))
    device = split.device
    if split.streamed:
        loader = split.loader(order[start_batch * size:plan.steps_per_epoch * size].tolist(), size, seed, epoch)
        for batch, (xb, yb) in enumerate(loader, start=start_batch):
            yield batch, xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        return
    order = order.to(device)
    for batch in range(start_batch, plan.steps_per_epoch):
        index = order[batch * size:(batch + 1) * size]
        yield batch, split.x.index_select(0, index), split.y.index_select(0, index)

"""An in-memory dataset: features, targets, class names, and a fingerprint of its contents."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import xxhash

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (``(N, *input_shape)``, float32) and targets ``y``.

    For classification ``y`` holds class indices (int64) and ``labels[i]`` names
    class ``i``; for regression ``y`` holds float32 targets and ``labels`` is None.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...] | None = None
    task: Task = "classification"

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"dataset {self.name!r}: {len(self.x)} samples but {len(self.y)} targets")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return len(self.labels) if self.labels is not None else None

    def subset(self, indices: np.ndarray, name: str | None = None) -> "Dataset":
        return replace(self, name=name or self.name, x=self.x[indices], y=self.y[indices])

    def fingerprint(self) -> str:
        """A content hash of features and targets (xxh3-128), recorded as provenance."""
        digest = xxhash.xxh3_128()
        for array in (self.x, self.y):
            contiguous = np.ascontiguousarray(array)
            digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
            digest.update(memoryview(contiguous).cast("B"))
        return f"xxh3-128:{digest.hexdigest()}"

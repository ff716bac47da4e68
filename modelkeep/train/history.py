"""Training history: one record per epoch, stored column-wise in the model file."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class History:
    """Per-epoch records such as ``{"epoch": 1, "loss": 0.3, "val_accuracy": 0.97, "lr": 1e-3, "time": 0.8}``."""

    records: list[dict[str, float]] = field(default_factory=list)

    def append(self, record: dict[str, float]) -> None:
        self.records.append(dict(record))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> list[float]:
        return [record.get(key, math.nan) for record in self.records]

    @property
    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for record in self.records:
            seen.update(dict.fromkeys(record))
        return list(seen)

    def to_dict(self) -> dict[str, list[float]]:
        """Column-wise: ``{"epoch": [1, 2, ...], "loss": [...], ...}`` (JSON-safe; NaN becomes None)."""
        return {key: [_json_number(v) for v in self[key]] for key in self.keys}

    @classmethod
    def from_dict(cls, columns: dict[str, list[Any]] | None) -> "History":
        if not columns:
            return cls()
        length = max(len(v) for v in columns.values())
        records = []
        for i in range(length):
            records.append({k: (math.nan if v[i] is None else v[i]) for k, v in columns.items() if i < len(v)})
        return cls(records)


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

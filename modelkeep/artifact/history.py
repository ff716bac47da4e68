"""The training history record: one dict per epoch, stored column-wise in the model file.

Only the record lives here, in the file's layer, so that loading a model never
imports the training loop. Writing it as CSV/JSON files and plotting curves is
``modelkeep.train.history``'s job. This module never imports torch or NumPy.
"""
from __future__ import annotations

import csv
import io
import json
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
        return {key: [json_number(v) for v in self[key]] for key in self.keys}

    @classmethod
    def from_dict(cls, columns: dict[str, list[Any]] | None) -> "History":
        if not columns:
            return cls()
        length = max(len(v) for v in columns.values())
        records = []
        for i in range(length):
            records.append({k: (math.nan if v[i] is None else v[i]) for k, v in columns.items() if i < len(v)})
        return cls(records)

    def to_csv(self) -> str:
        """One row per epoch, one column per key (empty cells where a value is missing)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        keys = self.keys
        writer.writerow(keys)
        for record in self.records:
            writer.writerow(["" if json_number(record.get(k)) is None else record.get(k) for k in keys])
        return out.getvalue()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def json_number(value: Any) -> Any:
    """``value``, or ``None`` for NaN and infinities (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

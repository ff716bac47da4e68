"""Training history: one record per epoch, stored column-wise in the model file, as CSV/JSON and as curves."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
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

    def to_csv(self) -> str:
        """One row per epoch, one column per key (empty cells where a value is missing)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        keys = self.keys
        writer.writerow(keys)
        for record in self.records:
            writer.writerow(["" if _json_number(record.get(k)) is None else record.get(k) for k in keys])
        return out.getvalue()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def write(self, folder: str | os.PathLike[str], *, stem: str = "history", plot: bool = True) -> list[Path]:
        """Write ``history.csv``, ``history.json`` and (with ``plot``) ``curves.png`` into ``folder``."""
        from ..checkpoint.atomic import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for suffix, text in ((".csv", self.to_csv()), (".json", self.to_json() + "\n")):
            path = folder / f"{stem}{suffix}"
            with atomic_write(path) as handle:
                handle.write(text.encode("utf-8"))
            written.append(path)
        if plot and self.records:
            written.append(plot_history(self, folder / "curves.png"))
        return written


def plot_history(history: History, path: str | os.PathLike[str]) -> Path:
    """Learning curves as a PNG: the loss (train and validation), each metric, and the learning rate."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = history["epoch"]
    metrics = [k for k in history.keys if k not in ("epoch", "loss", "val_loss", "lr", "time", "step")
               and not k.startswith("val_")]
    metrics += [k.removeprefix("val_") for k in history.keys if k.startswith("val_") and k != "val_loss"
                and k.removeprefix("val_") not in metrics]
    panels = ["loss", *metrics, "lr"]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, name in zip(axes[0], panels):
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in history.keys and key != "val_lr":
                axis.plot(epochs, history[key], style, marker="o", markersize=3, label=key)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if name == "lr":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if axis.lines:
            axis.legend(fontsize=8)
    figure.tight_layout()
    from ..checkpoint.atomic import atomic_write

    path = Path(path)
    try:
        with atomic_write(path) as handle:
            figure.savefig(handle, format="png", dpi=100)
    finally:
        plt.close(figure)
    return path


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

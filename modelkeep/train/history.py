"""Training history written out: CSV/JSON files and learning curves.

The record itself (``History``) belongs to the model file and lives in
``modelkeep.artifact.history``, so that loading a model never imports training;
it is re-exported here for the loop.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..artifact.history import History


def write_history(history: History, folder: str | os.PathLike[str], *, stem: str = "history",
                  plot: bool = True) -> list[Path]:
    """Write ``history.csv``, ``history.json`` and (with ``plot``) ``curves.png`` into ``folder``."""
    from ..io.atomic import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".csv", history.to_csv()), (".json", history.to_json() + "\n")):
        path = folder / f"{stem}{suffix}"
        with atomic_write(path) as handle:
            handle.write(text.encode("utf-8"))
        written.append(path)
    if plot and history.records:
        written.append(plot_history(history, folder / "curves.png"))
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
    from ..io.atomic import atomic_write

    path = Path(path)
    try:
        with atomic_write(path) as handle:
            figure.savefig(handle, format="png", dpi=100)
    finally:
        plt.close(figure)
    return path


__all__ = ["History", "plot_history", "write_history"]

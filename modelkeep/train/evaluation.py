"""Evaluating a saved model file on data: what ``modelkeep evaluate`` runs.

The data is split exactly as the model's training run split it (fractions and
seed recorded in the file's hyperparameters), so ``split="test"`` is the test
split the run held out; ``split="all"`` scores every sample (for a separate file).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError


def evaluate_file(path: str | Path, data: str, *, split: str = "test") -> dict[str, Any]:
    """Loss and every metric (per class and the confusion matrix for classification) of the model at ``path``."""
    from ..artifact import load
    from ..data.datasets import load_data
    from ..data.split import split_dataset
    from .fit import evaluate

    model = load(path)
    hyper = dict(model.manifest.hyperparameters or {})
    recorded = hyper.get("data") or {}
    options = dict(recorded.get("options") or {}) if str(recorded.get("source")) == str(data) else {}
    shape = options.get("shape")
    dataset = load_data(data, **({"shape": shape} if shape else {}))
    if dataset.task != model.manifest.task:
        raise DataError(f"{data!r} is a {dataset.task} dataset but the model was trained for {model.manifest.task}")
    if model.labels is not None and dataset.labels is not None and tuple(dataset.labels) != tuple(model.labels):
        raise DataError(f"the classes of {data!r} ({', '.join(dataset.labels)}) are not the model's "
                        f"({', '.join(model.labels)})")
    if split != "all":
        fractions = tuple(recorded.get("split") or (0.8, 0.1, 0.1))
        seed = int(recorded.get("split_seed", hyper.get("seed", 0)))
        splits = split_dataset(dataset, fractions=fractions, seed=seed)
        dataset = {"train": splits.train, "validation": splits.validation, "test": splits.test}[split]
    report = evaluate(model.module, dataset, loss=hyper.get("loss", "categorical_crossentropy"),
                      loss_options=hyper.get("loss_options"), preprocessing=model.preprocessing,
                      device="cpu", report=True)
    return {"model": str(path), "data": str(data), "split": split, "samples": len(dataset),
            "labels": list(model.labels) if model.labels else None, "metrics": report}

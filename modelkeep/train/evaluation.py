"""Evaluating a model: over a split inside ``fit``, over a dataset (``evaluate``), and a saved file
(``evaluate_file``, what ``modelkeep evaluate`` runs).

A split is evaluated in eval mode with one read from the device at the end;
afterwards the model goes back to the mode it was in through the mode policies
(a BatchNorm the user froze in eval stays in eval), never with a blind
``train(was_training)``.

``evaluate_file`` splits the data exactly as the model's training run split it
(fractions and seed recorded in the file's hyperparameters), so
``split="test"`` is the test split the run held out; ``split="all"`` scores
every sample (for a separate file).

With several processes (``strategy``) each evaluates every ``world_size``-th sample and the
additive sums (loss, sample count, confusion counts, regression sums) are gathered and added in
rank order, so every process gets the same numbers, the numbers of the whole split.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import DataError
from .batches import Split, input_dtype
from .losses import make_loss
from .metrics import MetricAccumulator, check_metric_names
from .modes import set_mode
from .runtime import resolve_device
from .strategy import unwrap_model

__all__ = ["EVAL_BATCH_SIZE", "evaluate", "evaluate_file", "evaluate_split", "final_activation"]

EVAL_BATCH_SIZE = 512


def final_activation(model: torch.nn.Module) -> str | None:
    """The final activation of a spec-built model (it decides the loss wiring), else None.
    Pass the unwrapped model: a wrapper (DDP, compile) hides ``spec``."""
    spec = getattr(model, "spec", None)
    return spec.final_activation() if spec is not None else None


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, split: Split, loss_fn, *, metrics: Sequence[str], num_classes: int | None,
                   final_activation: str | None, autocast: torch.dtype | None, mode_policies: Sequence[Any] = (),
                   batch_size: int = EVAL_BATCH_SIZE, strategy: Any = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Loss and metrics over the whole split (one read from the device at the end), and the full report.
    With a multi-process ``strategy`` it is collective: every process must call it."""
    rank, world_size = (strategy.rank, strategy.world_size) if strategy is not None else (0, 1)
    if world_size > 1 and len(split) < world_size:
        raise DataError(f"the {split.name!r} split has {len(split)} samples, fewer than the {world_size} processes "
                        "evaluating it; give it more samples or train on fewer processes")
    was_training = model.training
    set_mode(model, False, mode_policies)
    total_loss = torch.zeros((), device=split.device, dtype=torch.float64)
    accumulator = MetricAccumulator(split.task, num_classes=num_classes, final_activation=final_activation,
                                    device=split.device)
    count = 0
    context = (torch.autocast(split.device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext())
    for xb, yb in split.shard_batches(batch_size, rank, world_size):
        with context:
            out = model(xb)
        out = out.float()
        total_loss += loss_fn(out, yb).double() * len(xb)
        accumulator.update(out, yb)
        count += len(xb)
    set_mode(model, was_training, mode_policies)
    if world_size > 1:
        total_loss, count = _combine(strategy, accumulator, total_loss, count)
    report = accumulator.report()
    scalars = {"loss": float(total_loss) / max(count, 1)}
    scalars.update({name: report[name] for name in metrics})
    report = {"loss": scalars["loss"], **report}
    return scalars, report


def _combine(strategy: Any, accumulator: MetricAccumulator, total_loss: torch.Tensor,
             count: int) -> tuple[torch.Tensor, int]:
    """Collective: the sums of every process's part, added in rank order (float64; counts stay exact below 2**53)."""
    pieces = [total_loss.reshape(1), torch.tensor([float(count)], dtype=torch.float64, device=total_loss.device)]
    tables = [name for name in ("confusion", "sums") if getattr(accumulator, name) is not None]
    pieces += [getattr(accumulator, name).double().reshape(-1) for name in tables]
    total = strategy.gather(torch.cat(pieces)).sum(dim=0)
    offset = 2
    for name in tables:
        table = getattr(accumulator, name)
        part = total[offset:offset + table.numel()].reshape(table.shape)
        setattr(accumulator, name, part.round().to(table.dtype) if not table.is_floating_point() else part.to(table.dtype))
        offset += table.numel()
    accumulator.count = int(total[1])
    return total[0], accumulator.count


def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    *,
    loss: str = "categorical_crossentropy",
    preprocessing: Any = None,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str | torch.device | None = None,
    metrics: Sequence[str] | None = None,
    loss_options: dict[str, Any] | None = None,
    report: bool = False,
) -> dict[str, Any]:
    """Loss and metrics of ``model`` over the whole of ``dataset`` (with ``report``, every metric: per class,
    confusion matrix). ``preprocessing`` is applied, never fitted."""
    device = resolve_device(device)
    model.to(device)
    final = final_activation(unwrap_model(model))
    names = check_metric_names(metrics, dataset.task)
    split = Split(dataset, preprocessing, device, 0, dtype=input_dtype(unwrap_model(model)))
    num_classes = len(dataset.labels) if getattr(dataset, "labels", None) else None
    scalars, full = evaluate_split(model, split, make_loss(loss, final, **(loss_options or {})), metrics=names,
                                   num_classes=num_classes, final_activation=final, autocast=None,
                                   batch_size=batch_size)
    return full if report else scalars


def evaluate_file(path: str | Path, data: str, *, split: str = "test", trust_code: bool = False) -> dict[str, Any]:
    """Loss and every metric (per class and the confusion matrix for classification) of the model at ``path``.

    The data is read for this model: images brought to its input shape as they are read (never
    decoded whole beyond the readers' limits), in-memory samples reshaped to it or refused, and
    classes matched to the model's labels by name (folders ``benign/``, ``malignant/`` fit a model
    labelled ``malignant, benign``)."""
    from ..artifact import load
    from ..data.datasets import load_data
    from ..data.split import split_dataset

    model = load(path, trust_code=trust_code)
    hyper = dict(model.manifest.hyperparameters or {})
    recorded = hyper.get("data") or {}
    options = dict(recorded.get("options") or {}) if str(recorded.get("source")) == str(data) else {}
    options.pop("shape", None)  # the model's input shape below says the same, and more
    shape = model._input_shape()
    if shape is not None and all(isinstance(d, int) for d in shape):
        options["input_shape"] = tuple(shape)
    if model.labels is not None:
        options["labels"] = tuple(model.labels)
    dataset = load_data(data, **options)
    if dataset.task != model.manifest.task:
        raise DataError(f"{data!r} is a {dataset.task} dataset but the model was trained for {model.manifest.task}")
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

"""The parameter table of a model being reused: each layer, its parameter count, frozen or not, its learning rate.

``model_summary_rows`` gives the rows (what ``modelkeep params`` prints); ``summary`` the text table.
With an optimizer, a layer's learning rate is read from the optimizer's groups, so the table shows the
rates that really reach it (discriminative rates, groups added by gradual unfreezing).
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .adapter import Transferable

__all__ = ["model_summary_rows", "summary"]


def _rate(names: list[str], parameters: dict[str, torch.nn.Parameter], lr_of: dict[int, float]) -> Any:
    rates = sorted({lr_of[id(parameters[n])] for n in names if id(parameters[n]) in lr_of})
    if not rates:
        return None
    return rates[0] if len(rates) == 1 else rates


def model_summary_rows(model: Any, optimizer: torch.optim.Optimizer | None = None, *,
                       head: str | None = None) -> list[dict[str, Any]]:
    """One row per layer with parameters, input first: ``layer``, ``parameters`` (count), ``trainable`` (count),
    ``frozen`` (``"yes"``, ``"no"`` or ``"partly"``), ``head`` (bool) and ``lr`` (with an optimizer: the rate,
    a sorted list of rates when its parameters differ, or ``None`` for a layer outside the optimizer)."""
    view = model if isinstance(model, Transferable) else Transferable(getattr(model, "module", model), head)
    parameters = dict(view.module.named_parameters())
    lr_of = {id(p): float(group["lr"]) for group in (optimizer.param_groups if optimizer else ()) for p in group["params"]}
    try:
        head_at = view.head_index
    except ConfigError:  # a model without a recognisable head still gets its table
        head_at = None
    rows = []
    for index, layer in enumerate(view.layers()):
        names = list(layer.parameters)
        total = sum(parameters[n].numel() for n in names)
        trainable = sum(parameters[n].numel() for n in names if parameters[n].requires_grad)
        frozen = "no" if trainable == total else "yes" if trainable == 0 else "partly"
        rows.append({"index": index, "layer": view.layer_label(layer), "prefix": layer.name, "parameters": total, "trainable": trainable,
                     "frozen": frozen, "head": index == head_at,
                     "lr": _rate(names, parameters, lr_of) if optimizer is not None else None})
    return rows


def _format_rate(rate: Any) -> str:
    if rate is None:
        return "-"
    if isinstance(rate, list):
        return ",".join(f"{r:.3g}" for r in rate)
    return f"{rate:.3g}"


def summary(model: Any, optimizer: torch.optim.Optimizer | None = None, *, head: str | None = None) -> str:
    """The parameter table as text: layer, parameters, frozen?, learning rate (with ``optimizer``).

    ``model``: a module, a ``Transferable``, a loaded ``Model`` or a ``FitResult`` (whose optimizer is used
    when none is given).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> _ = net[0].requires_grad_(False)
    >>> print(summary(net))
    #  layer     parameters  frozen  lr
    0  0                 40  yes     -
    1  2 (head)          27  no      -
    total: 67 parameters, 27 trainable
    """
    if optimizer is None and isinstance(getattr(model, "optimizer", None), torch.optim.Optimizer):
        optimizer = model.optimizer
    if hasattr(model, "history") and hasattr(model, "model"):  # a FitResult
        model = model.model
    rows = model_summary_rows(model, optimizer, head=head)
    table = [("#", "layer", "parameters", "frozen", "lr")]
    for row in rows:
        table.append((str(row["index"]), row["layer"] + (" (head)" if row["head"] else ""), str(row["parameters"]),
                      row["frozen"], _format_rate(row["lr"])))
    widths = [max(len(line[i]) for line in table) for i in range(5)]
    lines = ["  ".join(cell.rjust(widths[i]) if i == 2 else cell.ljust(widths[i])
                       for i, cell in enumerate(line)).rstrip() for line in table]
    total = sum(row["parameters"] for row in rows)
    trainable = sum(row["trainable"] for row in rows)
    lines.append(f"total: {total} parameters, {trainable} trainable")
    return "\n".join(lines)

"""Continued training: a saved model trained further on new data (``fit(None, new, init_from=FILE)``).

Keeping a model current is not fine-tuning: the task, the classes and the input stay those of the
file, the network is the file's own (no new head, nothing frozen), and the question the user asks
afterwards is "what did it forget?". So, in order, ``continue_fit``:

1. opens the parent (a file, read into private memory, or a loaded ``Model``, whose module is copied:
   the parent object stays as it was);
2. checks the new data against the file — the task, the input shape and the classes (new data may
   hold a subset of the file's classes, re-expressed in the file's order; a class the file does not
   know, or another task or shape, is a ``ConfigError`` naming both sides);
3. keeps the file's fitted preprocessing as it is (``KeptPreprocessing``): the weights learned the
   statistics, the tokenizer, the scaling they were fitted with, and refitting them on the new data
   would move every input under the network's feet before the first step;
4. evaluates the parent on the old and the new test sets ("before");
5. runs ``fit`` with a callback that loads the parent's optimizer state (Adam's moments, the step
   counts) into the new optimizer when it fits (same optimizer class, same parameters in the same
   order and shapes), and warns that it started fresh when it does not. The learning rate, betas and
   weight decay are the new run's: only the per-parameter state is carried;
6. evaluates again ("after") and returns a ``ContinuedResult`` whose ``lineage`` (what ``save``
   writes) holds the parent's content hash, ``relation: "continued"``, both data fingerprints and the
   before/after table (docs/format.md, 5.4).

A checkpointed continued run resumes like any other ``fit``: the checkpoint's optimizer state is
restored after the parent's was loaded, so it wins. This module never writes a file.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from ..errors import ConfigError
from .batches import as_dataset
from .result import FitResult

__all__ = ["CONTINUED", "ContinuedResult", "continuable", "KeptPreprocessing", "OptimizerStateWarning", "continue_fit",
           "evaluate_tests", "evaluation_rows", "fit_to_parent", "load_optimizer_state", "open_parent",
           "read_options"]

CONTINUED = "continued"  # lineage.relation of a continued model


class OptimizerStateWarning(UserWarning):
    """The parent's optimizer state did not fit the new optimizer; training started with a fresh state."""


@dataclass
class ContinuedResult(FitResult):
    """``fit``'s result plus what ``save`` records of the continuation: ``lineage`` (parent, relation, data
    fingerprints, the evaluation table) and ``evaluation`` (the same table, for the caller to print)."""

    lineage: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    stopped_by: str | None = None  # an update stream: why it ended (end of stream, max_batches, SIGTERM, ...)


class KeptPreprocessing:
    """The parent's fitted preprocessing, applied as it is: ``fit`` is a no-op (see the module docstring); fine-tuning
    (``transfer``) keeps a base's preprocessing with it too."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def fit(self, x: Any) -> "KeptPreprocessing":
        return self

    def transform(self, x: Any) -> Any:
        return self.inner.transform(x)

    def to_dict(self) -> dict[str, Any]:
        return self.inner.to_dict()

    def __getattr__(self, name: str) -> Any:  # transform_targets, takes_text, ...: the inner one's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def open_parent(init_from: Any) -> Any:
    """The parent as a loaded ``Model`` whose module may be trained: a file read into private memory, or a
    copy of a given ``Model``'s module (so the caller's object keeps the parent's weights)."""
    from ..artifact.loading import load
    from ..artifact.model import Model

    if isinstance(init_from, Model):
        parent = copy.copy(init_from)
        parent.module = copy.deepcopy(init_from.module)
        return parent
    if isinstance(init_from, (str, os.PathLike)):
        if os.path.isdir(init_from):
            raise ConfigError(f"init_from {str(init_from)!r} is a folder; give the model file (.safetensors)")
        return load(init_from, mmap=False)  # private memory: the weights are trained in place
    raise ConfigError(f"init_from takes a model file or a loaded Model, got {type(init_from).__name__}")


def read_options(parent: Any) -> dict[str, Any]:
    """How to read data for the parent: its input shape and its labels (classes matched by name)."""
    options: dict[str, Any] = {}
    shape = parent._input_shape()
    if shape is not None and all(isinstance(d, int) for d in shape):
        options["input_shape"] = tuple(shape)
    if parent.labels is not None:
        options["labels"] = tuple(parent.labels)
    return options


def fit_to_parent(data: Any, parent: Any, role: str) -> Any:
    """``data`` (a Dataset or an ``(x, y)`` pair) as the parent sees it, or ``ConfigError`` naming both sides."""
    if data is None:
        return None
    task, labels = parent.manifest.task or "classification", parent.labels
    if isinstance(data, tuple) and len(data) == 2:
        from ..data.targets import dataset_from_arrays

        import numpy as np

        whole = task == "classification" and np.asarray(data[1]).dtype.kind in "biuU"  # class values, however few
        data = dataset_from_arrays(data[0], data[1], name=role, task=task if whole else "auto")
    data = as_dataset(data, role)
    where = f"the {role} data {data.name!r}"
    source = str(parent.path) if parent.path else "the parent model"
    if data.task != task:
        raise ConfigError(f"{where} is a {data.task} dataset but {source} was trained for {task}; continue "
                          "training on data of the same task (or fine-tune to change it)")
    expected = parent._input_shape()
    fixed = expected is not None and all(isinstance(d, int) for d in expected)
    if fixed and tuple(data.input_shape) != tuple(expected):
        raise ConfigError(f"{where} has samples of shape {list(data.input_shape)} but {source} takes "
                          f"{list(expected)}")
    if labels is None or data.labels is None or tuple(data.labels) == tuple(labels):
        return data
    from ..data.targets import match_labels

    unknown = [name for name in data.labels if name not in labels]
    if not unknown and data.y.ndim != 1:  # per-position targets are token ids: indices into the file's labels
        return dataclasses.replace(data, labels=tuple(labels))
    if unknown:
        raise ConfigError(f"{where} has the classes {list(data.labels)[:20]} but {source} knows {list(labels)[:20]}"
                          f" (new: {unknown[:10]}); continued training keeps the file's "
                          "classes — to add classes, fine-tune with a new head (modelkeep finetune --head N)")
    y, names = match_labels(data.y, tuple(data.labels), labels, data.name)
    return dataclasses.replace(data, y=y, labels=names)


# ---------------------------------------------------------------------- optimizer state


def load_optimizer_state(optimizer: torch.optim.Optimizer, parent: Any) -> str | None:
    """Load the parent's per-parameter optimizer state into ``optimizer``; the reason it did not, or None.

    Parameters are matched by their order in the optimizer (the same network builds the same order);
    every state tensor of a parameter must have that parameter's shape. Only ``state`` is carried: the
    param groups (learning rate, betas, weight decay) stay those of the new run."""
    if parent.manifest.optimizer is None:
        return "the file has no optimizer state"
    saved = parent.optimizer_state()
    recorded = parent.manifest.optimizer.get("class")
    kind = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    if recorded and recorded != kind:
        return f"the file's optimizer is {recorded}, this run's is {kind}"
    saved_ids = [key for group in saved["param_groups"] for key in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if len(saved_ids) != len(params):
        return f"the file's optimizer held {len(saved_ids)} parameters, this run's holds {len(params)}"
    current = optimizer.state_dict()
    current_ids = [key for group in current["param_groups"] for key in group["params"]]
    state: dict[Any, dict[str, Any]] = {}
    for index, (key, param) in enumerate(zip(saved_ids, params)):
        entry = saved["state"].get(key, saved["state"].get(str(key)))
        if not entry:
            continue
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != tuple(param.shape):
                return (f"parameter {index}'s {name} has shape {list(value.shape)}, the parameter "
                        f"{list(param.shape)}")
        state[current_ids[index]] = {name: value.clone() if isinstance(value, torch.Tensor) else value
                                     for name, value in entry.items()}
    current["state"] = state
    optimizer.load_state_dict(current)
    return None


class _ParentOptimizerState:
    """A ``fit`` callback: when the optimizer is made, before any checkpoint is restored, it receives the
    parent's optimizer state (a resumed checkpoint then replaces it with its own)."""

    def __init__(self, parent: Any) -> None:
        self.parent = parent
        self.reason: str | None = None

    def on_optimizer_ready(self, optimizer: torch.optim.Optimizer) -> None:
        self.reason = load_optimizer_state(optimizer, self.parent)
        if self.reason is not None and self.parent.manifest.optimizer is not None:
            warnings.warn(f"continued training started with a fresh optimizer state: {self.reason}",
                          OptimizerStateWarning, stacklevel=2)


# ---------------------------------------------------------------------- evaluation


def evaluate_tests(module: torch.nn.Module, datasets: Mapping[str, Any], settings: Any,
                   preprocessing: Any) -> dict[str, dict[str, float]]:
    """Loss and metrics of ``module`` on each named test set (the settings' loss, metrics and device)."""
    from .evaluation import evaluate

    return {role: evaluate(module, data, loss=settings.loss, loss_options=settings.loss_options,
                           preprocessing=preprocessing, device=settings.device, metrics=settings.metrics)
            for role, data in datasets.items()}


def evaluation_rows(table: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The before/after table as printable rows: ``(header, rows)``, one row per test set and metric."""
    header = ["test set", "metric", "before", "after", "change"]
    rows = []
    for role, entry in table.items():
        for metric, before in entry["before"].items():
            after = entry["after"].get(metric)
            change = f"{after - before:+.4f}" if isinstance(after, float) and isinstance(before, float) else ""
            rows.append([role.replace("_", " "), metric, _number(before), _number(after), change])
    return header, rows


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)


# ---------------------------------------------------------------------- the continued run


_FIT_DOC = """
    ``init_from`` (a model file or a loaded ``Model``; ``model`` may then be None) continues training
    that model on the new data: its weights, classes, task and fitted preprocessing, and its saved
    optimizer state when it fits; ``old_test`` (its old test set) is scored before and after beside
    ``test``, and the result's ``lineage`` records both (``modelkeep.train.continued``).
"""


def continuable(fit: Callable[..., FitResult]) -> Callable[..., FitResult]:
    """``fit`` with the keywords ``init_from`` and ``old_test``: given either, the call is ``continue_fit``'s,
    which calls the undecorated ``fit`` with the file's network. A decorator so that ``fit`` itself stays the
    assembly of one training run (and within its size)."""
    import functools
    import inspect

    @functools.wraps(fit)
    def continuing(model: Any, train: Any, validation: Any = None, test: Any = None, *, init_from: Any = None,
                   old_test: Any = None, **options: Any) -> FitResult:
        if init_from is None and old_test is None:
            return fit(model, train, validation, test, **options)
        return continue_fit(fit, model, train, validation, test, init_from=init_from, old_test=old_test, **options)

    signature = inspect.signature(fit)
    parameters = list(signature.parameters.values())
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
             for name in ("init_from", "old_test")]
    continuing.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters[:-1] + extra + parameters[-1:])
    continuing.__doc__ = (fit.__doc__ or "").rstrip() + "\n" + _FIT_DOC
    return continuing



def continue_fit(fit: Callable[..., FitResult], model: Any, train: Any, validation: Any = None, test: Any = None,
                 *, init_from: Any, old_test: Any = None, settings: Any = None, preprocessing: Any = None,
                 callbacks: Any = (), **fit_options: Any) -> ContinuedResult:
    """What ``fit(model, train, ..., init_from=FILE, old_test=...)`` runs (see the module docstring).

    ``model`` is None (the file's network) or a module of the same architecture, which receives the
    file's weights. ``fit`` is passed in by ``fit`` itself (this module sits below it)."""
    from .settings import FitSettings

    if init_from is None:
        raise ConfigError("old_test= is the old test set of a continued run: give init_from=FILE as well")
    if preprocessing is not None:
        raise ConfigError("continued training keeps the file's fitted preprocessing (the weights were learned "
                          "on it); leave preprocessing= out, or fine-tune to change it")
    parent = open_parent(init_from)
    module = _module(model, parent)
    train = fit_to_parent(train, parent, "training")
    validation, test, old_test = (fit_to_parent(data, parent, role) for data, role in
                                  ((validation, "validation"), (test, "test"), (old_test, "old test")))
    recorded = dict(parent.manifest.hyperparameters or {})
    if settings is None and "loss" not in fit_options and isinstance(recorded.get("loss"), str):
        fit_options["loss"] = recorded["loss"]  # the file's loss, unless the caller names one
        if isinstance(recorded.get("loss_options"), dict) and "loss_options" not in fit_options:
            fit_options["loss_options"] = recorded["loss_options"]
    names = {f.name for f in dataclasses.fields(FitSettings)}
    resolved = FitSettings.from_options(settings, **{k: v for k, v in fit_options.items() if k in names}
                                        ).resolve(len(train), train.task)
    # Never refitted on the new data: the weights were learned on inputs scaled (tokenised) with the parent's
    # statistics, and new statistics would move every input before the first step of the continuation.
    kept = KeptPreprocessing(parent.preprocessing) if parent.preprocessing is not None else None
    tests = {name: data for name, data in (("old_test", old_test), ("new_test", test)) if data is not None}
    before = evaluate_tests(module, tests, resolved, kept)
    loader = _ParentOptimizerState(parent)
    module.train()
    result = fit(module, train, validation, test, settings=settings, preprocessing=kept,
                 callbacks=[loader, *callbacks], **fit_options)
    after = evaluate_tests(result.model, tests, resolved, kept)
    table = {name: {"samples": len(data), "data_fingerprint": data.fingerprint(), "before": before[name],
                    "after": after[name]} for name, data in tests.items()}
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(FitResult)}
    fields["preprocessing"] = parent.preprocessing
    fields["hyperparameters"] = {**fields["hyperparameters"], "optimizer_state": (
        "continued from the parent" if loader.reason is None else "fresh")}
    return ContinuedResult(**fields, lineage=continued_lineage(parent, result.data_fingerprint, table),
                           evaluation=table)


def continued_lineage(parent: Any, new_fingerprint: str | None, table: Mapping[str, Any] | None,
                      *, mode: str = "fit", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``lineage`` section of a continued model (docs/format.md, 5.4)."""
    record: dict[str, Any] = {"relation": CONTINUED, "mode": mode}
    if parent.content_hash is not None:
        record["parent"] = {"content_hash": parent.content_hash,
                            **({"source": str(parent.path)} if parent.path else {})}
    record["data_fingerprints"] = {"parent": (parent.manifest.provenance or {}).get("data_fingerprint"),
                                   "new": new_fingerprint}
    if table:
        record["evaluation"] = dict(table)
    record.update(extra or {})
    return record


def _module(model: Any, parent: Any) -> torch.nn.Module:
    """The network to train: the file's, or ``model`` with the file's weights (refused when they differ)."""
    if model is None:
        return parent.module
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"fit(model, ..., init_from=...) takes None or an nn.Module, got {type(model).__name__}")
    try:
        model.load_state_dict(parent.module.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"the model given to fit is not the network of {parent.path or 'the parent'} "
                          f"({' '.join(str(exc).split())[:300]}); pass None to train the file's own network") from None
    return model



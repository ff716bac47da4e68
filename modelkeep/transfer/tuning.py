"""``finetune``: train a model that starts from another — a set of regularizers, group rules, mode policies and
a callback handed to ``fit``, which holds the loop.

In order, ``finetune``: resolves the base (a modelkeep file, a loaded ``Model``, a module, or a zoo name
built with random weights) and its fitted preprocessing; remembers ``w₀`` when L2-SP asks; replaces the
head (seeded, so a resume rebuilds the same one); freezes what ``freeze`` names and what waits for a later
stage; makes the group rules (explicit groups, then discriminative rates), the L2-SP regularizer, the
BatchNorm policies (re-estimating the statistics first when asked) and the unfreezing schedule; calls
``fit``; and returns its result with the transfer record that ``save`` writes into the file's lineage.
It never writes a file itself (``fit``'s checkpointing does, when asked).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ConfigError, ModelNotFoundError
from ..train.batches import Split, fit_preprocessing, input_dtype
from ..train.param_groups import GroupRule, discriminative_rules
from ..train.continued import KeptPreprocessing  # the parent's statistics, never refitted: one class for both
from ..train.result import FitResult
from ..train.settings import FitSettings
from .adapter import Transferable
from .batchnorm import batchnorm_policies, reestimate_statistics
from .l2sp import L2SP
from .schedule import UnfreezeSchedule, plan_stages
from .selectors import set_trainable
from .settings import TransferSettings

__all__ = ["TransferResult", "finetune", "resolve_base"]


@dataclass
class TransferResult(FitResult):
    """``fit``'s result plus the transfer record: ``transfer`` (the settings as recorded) and ``lineage``
    (what ``save`` writes: the parent's content hash, relation, settings, and the layers that trained)."""

    transfer: dict[str, Any] | None = None
    lineage: dict[str, Any] | None = None


@dataclass
class Base:
    """The model a fine-tune starts from, resolved: the module, where it came from, its fitted preprocessing."""

    module: torch.nn.Module
    content_hash: str | None = None  # the parent's, when the base is a modelkeep file
    source: str | None = None        # its path, or "zoo:<name>"
    preprocessing: Any = None
    head: str | None = None          # the head's attribute path, for a user class given through the adapter


def resolve_base(base: Any, *, seed: int = 0) -> Base:
    """A modelkeep file path, a loaded ``Model``, an ``nn.Module``, a ``Transferable``, a zoo model name, or
    ``{"zoo": name, **options}`` (the zoo model built with those options, random weights, seeded)."""
    from ..artifact.model import Model

    if isinstance(base, Transferable):
        return Base(base.module, head=None if base.native else base.head_path)
    if isinstance(base, Model):
        return Base(base.module, base.content_hash, str(base.path) if base.path else None, base.preprocessing)
    if isinstance(base, torch.nn.Module):
        return Base(base)
    if isinstance(base, Mapping) and "zoo" in base:  # {"zoo": "resnet18", **the zoo model's options}
        return _zoo_base(str(base["zoo"]), {k: v for k, v in base.items() if k != "zoo"}, seed)
    if isinstance(base, (str, os.PathLike)):
        path = Path(base)
        if path.is_file():
            from ..artifact.loading import load

            model = load(path, mmap=False)  # private memory: the weights are trained in place
            return Base(model.module, model.content_hash, str(path), model.preprocessing)
        return _zoo_base(str(base), {}, seed)
    raise ConfigError(f"base must be a model file, a loaded Model, an nn.Module or a zoo name, got "
                      f"{type(base).__name__}")


def _zoo_base(name: str, options: dict[str, Any], seed: int) -> Base:
    from ..nn import build
    from ..zoo import get_spec, list_models

    if name not in list_models():
        raise ModelNotFoundError(f"base {name!r} is neither a model file nor a zoo model (zoo: "
                                 f"{', '.join(list_models())})")
    return Base(build(get_spec(name, **options), seed=seed), source=f"zoo:{name}")


def _transfer_settings(transfer: Any, given: Mapping[str, Any]) -> TransferSettings:
    settings = TransferSettings.from_dict(transfer) if transfer is not None else TransferSettings()
    changes = {key: value for key, value in given.items() if value is not None}
    return settings.replace(**changes) if changes else settings


def _with_labels(data: Any, labels: Any) -> Any:
    if data is None or labels is None:
        return data
    if not dataclasses.is_dataclass(data) or not hasattr(data, "labels"):
        raise ConfigError("labels= needs in-memory datasets (modelkeep Dataset)")
    labels = tuple(str(label) for label in labels)
    if data.labels is not None and len(data.labels) != len(labels):
        raise ConfigError(f"labels= names {len(labels)} classes but the dataset {data.name!r} has {len(data.labels)}")
    return dataclasses.replace(data, labels=labels)


def _freeze_plan(view: Transferable, settings: TransferSettings, new: list[str]) -> list[Any]:
    """Freeze what never trains and what waits for a stage; returns the stages (when what joins)."""
    model = view.module
    permanent: list[str] = []
    if settings.freeze is not None:
        chosen = view.selected(settings.freeze if isinstance(settings.freeze, str) else list(settings.freeze))
        permanent = [n for n in chosen if not (settings.freeze == "all" and n in new)]
    already = [name for name, p in model.named_parameters() if not p.requires_grad]  # a spec's trainable: false
    never = set(permanent) | set(already)
    set_trainable(model, permanent, False)
    stages: list[Any] = []
    if settings.staged:
        layers = view.layers()
        stages = plan_stages(layers, view.head_index, never, probe_epochs=settings.probe_epochs,
                             unfreeze_every=settings.unfreeze_every, blocks=settings.blocks)
        set_trainable(model, [n for stage in stages for n in stage.names], False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("nothing is left to train: every parameter is frozen; freeze fewer layers or give head=N")
    return stages


def _rules(model: torch.nn.Module, settings: TransferSettings, given: Any) -> tuple[Any, ...]:
    rules = [*(given or ()), *(GroupRule(**group) for group in settings.groups)]
    if settings.discriminative is not None:
        rules.extend(discriminative_rules(model, settings.discriminative))
    return tuple(rules)


def _l2sp(settings: TransferSettings, reference: dict[str, torch.Tensor] | None, model: torch.nn.Module,
          new: list[str], base: Base) -> list[Any]:
    if settings.l2sp is None or reference is None:
        return []
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    fresh = [n for n in shapes if n in new or n not in reference or tuple(reference[n].shape) != shapes[n]]
    kept = {n: t for n, t in reference.items() if n in shapes and n not in fresh}
    return [L2SP(kept, settings.l2sp["alpha"], settings.l2sp["beta"], new=fresh, base=base.content_hash)]


def _reestimate(model: torch.nn.Module, train: Any, preprocessing: Any, fit_settings: FitSettings) -> None:
    fit_preprocessing(preprocessing, train, fit_settings.seed)
    device = next(model.parameters()).device
    split = Split(train, preprocessing, device, 0, dtype=input_dtype(model))
    batch = fit_settings.batch_size if isinstance(fit_settings.batch_size, int) else 256
    reestimate_statistics(model, (xb for xb, _ in split.batches(max(batch, 1))))


def _learning_rates(view: Transferable, optimizer: Any) -> dict[str, Any]:
    """Each layer's learning rate before any schedule (``None``: never trained; a list when its parameters differ)."""
    rate_of = {id(p): float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups
               for p in group["params"]}
    parameters = dict(view.module.named_parameters())
    rates: dict[str, Any] = {}
    for layer in view.layers():
        found = sorted({rate_of[id(parameters[n])] for n in layer.parameters if id(parameters[n]) in rate_of})
        rates[view.layer_label(layer)] = None if not found else found[0] if len(found) == 1 else found
    return rates


def _lineage(base: Base, settings: TransferSettings, view: Transferable, result: FitResult) -> dict[str, Any]:
    """The file's lineage: parent, relation, settings, the layers that trained and their learning rates."""
    frozen = set(result.hyperparameters.get("frozen", ()))
    layers = view.layers()
    trained = [layer for layer in layers if any(n not in frozen for n in layer.parameters)]
    record: dict[str, Any] = {"relation": "fine-tuned", "transfer": settings.to_dict(),
                              "trained_layers": [view.layer_label(layer) for layer in trained],
                              "frozen_layers": [view.layer_label(layer) for layer in layers if layer not in trained]}
    if result.optimizer is not None:
        record["learning_rates"] = _learning_rates(view, result.optimizer)
    if base.content_hash is not None:
        record["parent"] = {"content_hash": base.content_hash, **({"source": base.source} if base.source else {})}
    elif base.source is not None:
        record["base"] = base.source
    return record


def finetune(base: Any, train: Any, validation: Any = None, test: Any = None, *, transfer: Any = None,
             head: int | None = None, freeze: Any = None, unfreeze_every: int | None = None,
             discriminative: float | None = None, groups: Any = None, l2sp: Any = None, batchnorm: str | None = None,
             probe_epochs: int | None = None, labels: Any = None, **fit_options: Any) -> TransferResult:
    """Fine-tune ``base`` on ``train`` (validating on ``validation``, testing once on ``test``).

    ``base``: a modelkeep file, a loaded ``Model``, an ``nn.Module`` (spec-built or a user class; pass
    ``as_transferable(module, head="attr")`` to name a user class's head) or a zoo name (random
    weights). The transfer options are ``TransferSettings``' fields — give them as keywords or as
    ``transfer=`` (settings or a dict; keywords win). ``labels`` renames the new task's classes.
    Every other keyword is ``fit``'s (``epochs``, ``learning_rate``, ``checkpoint``, ``resume``, ...).
    The base's fitted preprocessing is kept as it is unless ``preprocessing=`` is given. The module is
    trained in place (a file base is loaded privately). ``save(result, path)`` records the lineage.
    """
    from ..train.fit import fit

    given = dict(head=head, freeze=freeze, unfreeze_every=unfreeze_every, discriminative=discriminative,
                 groups=groups, l2sp=l2sp, batchnorm=batchnorm, probe_epochs=probe_epochs)
    settings = _transfer_settings(transfer, given)
    fit_settings = FitSettings.from_options(fit_options.get("settings"), **{
        k: v for k, v in fit_options.items() if k in {f.name for f in dataclasses.fields(FitSettings)}})
    resolved = resolve_base(base, seed=fit_settings.seed)
    model = resolved.module
    view = Transferable(model, resolved.head)
    reference = ({n: p.detach().clone() for n, p in model.named_parameters()} if settings.l2sp else None)
    new: list[str] = []
    if settings.head is not None:
        view.replace_head(settings.head, seed=fit_settings.seed)
        model, new = view.module, list(view.head_parameters)  # an encoder's module grows a head: a new module
    stages = _freeze_plan(view, settings, new)
    options = dict(fit_options)
    # what fit is given besides the user's own (from the options or settings=FitSettings(...)): ours come after
    options["param_groups"] = _rules(model, settings, fit_settings.param_groups)
    options["regularizers"] = (*fit_settings.regularizers, *_l2sp(settings, reference, model, new, resolved))
    options["mode_policies"] = (*fit_settings.mode_policies, *batchnorm_policies(settings.batchnorm))
    schedule = UnfreezeSchedule(stages, settings=settings.to_dict(), policies=options["mode_policies"])
    options["callbacks"] = [schedule, *(options.get("callbacks") or ())]
    if options.get("preprocessing") is None and resolved.preprocessing is not None:
        options["preprocessing"] = KeptPreprocessing(resolved.preprocessing)
    train, validation, test = (_with_labels(part, labels) for part in (train, validation, test))
    if settings.batchnorm == "reestimate":
        _reestimate(model, train, options.get("preprocessing"), fit_settings)
    model.train()  # modes are the policies' business now, not whatever eval() the base was loaded in
    result = fit(model, train, validation, test, **options)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(FitResult)}
    if isinstance(fields["preprocessing"], KeptPreprocessing):
        fields["preprocessing"] = fields["preprocessing"].inner
    return TransferResult(**fields, transfer=settings.to_dict(), lineage=_lineage(resolved, settings, view, result))

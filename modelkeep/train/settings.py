"""``FitSettings``: the one place a training option is declared.

Each field is one option of ``fit`` (same name, same default) and carries an
``Option`` saying where else it shows up; everything that used to restate the
options is derived from these fields:

* ``hyperparameters()`` — what the model file records about its training run;
* ``fingerprint()`` — the settings a resume must match (``checkpointing``);
* ``yaml_keys()`` / ``yaml_defaults()`` — the training config's keys and defaults (``config``);
* ``fit(**options)`` — the keyword names ``fit`` accepts, and its signature.

So adding an option is one ``option(...)`` line here, plus the code that uses it.

The settings are flat on purpose: ``fit``'s keywords, the config's keys, the
recorded hyperparameters and the fingerprint are all flat, and grouping the
fields into nested dataclasses would need a table restating each name to route
them. The fields are declared in the order the file records them.

Values are checked when the settings are made (``__post_init__``, with the
messages ``fit`` always gave); what needs the data or the device (a
``"full"`` batch, the task's default metrics, ``"auto"`` precision) is settled
by ``resolve``, which returns the settings the run actually used. Never reads
data, never touches a model.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping

from .._overrides import shorten_value
from ..errors import ConfigError

__all__ = ["FitSettings", "Option", "fit_signature", "option", "yaml_defaults", "yaml_keys"]

ALWAYS, IF_SET = "always", "if_set"
_PRECISIONS = {"32": ("32", "fp32", "float32", 32), "bf16": ("bf16", "bf16-mixed", "bfloat16"),
               "16": ("16", "fp16", "16-mixed", "float16", 16)}
_AUTOCAST_NAMES = {"32": "float32", "bf16": "torch.bfloat16", "16": "torch.float16"}  # str(dtype), as recorded


@dataclass(frozen=True)
class Option:
    """Where an option is restated besides ``fit``'s keyword of the same name.

    ``recorded``: ``"always"``, ``"if_set"`` (only when its recorded form is truthy and not the
    default) or None (not in the file's hyperparameters). ``fingerprint``: part of the resume fingerprint — a
    recorded option in its recorded form and under the same condition, any other one always
    (``fingerprint_as`` turns it into its fingerprinted form). ``yaml``: a key of the training
    config. ``record_as(value, settings)`` turns the value into what the file records.
    """

    recorded: str | None = ALWAYS
    fingerprint: bool = True
    yaml: bool = True
    record_as: Callable[[Any, Any], Any] | None = None
    fingerprint_as: Callable[[Any], Any] | None = None


def option(default: Any = None, *, recorded: str | None = ALWAYS, fingerprint: bool | None = None, yaml: bool = True,
           record_as: Callable[[Any, Any], Any] | None = None,
           fingerprint_as: Callable[[Any], Any] | None = None) -> Any:
    """A ``FitSettings`` field; ``fingerprint`` defaults to whether the option is recorded."""
    if recorded not in (ALWAYS, IF_SET, None):
        raise ConfigError(f"recorded must be 'always', 'if_set' or None, got {shorten_value(recorded)}")
    meta = Option(recorded, recorded is not None if fingerprint is None else fingerprint, yaml, record_as,
                  fingerprint_as)
    return field(default=default, metadata={"option": meta})


def _merged_weight_decay(options: Any, settings: "FitSettings") -> Any:
    merged = dict(options or {})
    if settings.weight_decay:
        merged["weight_decay"] = settings.weight_decay
    return merged


def _schedule_record(value: Any, settings: "FitSettings") -> Any:
    from .schedules import Schedule

    return type(value).__name__ if isinstance(value, Schedule) else value


def _early_stopping_record(value: Any, settings: "FitSettings") -> Any:
    from .callbacks import EarlyStopping

    return True if isinstance(value, EarlyStopping) else value


def _type_names(values: Any, settings: "FitSettings") -> list[str]:
    return [type(value).__name__ for value in values]


def _rules_record(rules: Any, settings: "FitSettings") -> list[dict[str, Any]]:
    return [dataclasses.asdict(rule) if dataclasses.is_dataclass(rule) else dict(rule) for rule in rules]


@dataclass(frozen=True)
class FitSettings:
    """How ``fit`` trains: every option except the live collaborators (data, preprocessing, callbacks,
    progress output, checkpoint folder, process strategy), which ``fit`` takes beside it.

    ``FitSettings(epochs=5, learning_rate=3e-4)`` then ``fit(model, train, settings=...)`` is the
    same as ``fit(model, train, epochs=5, learning_rate=3e-4)``.
    """

    # -- what is optimized, and how (always recorded)
    loss: str = option("categorical_crossentropy")
    optimizer: str = option("adam")
    learning_rate: float = option(1e-3)
    epochs: int = option(10)
    batch_size: int | str = option(32)           # an int, "full" (full batch) or "sample" (per-sample)
    seed: int = option(0)                        # every random source and the data order
    metrics: tuple[str, ...] | None = option(None, record_as=lambda names, s: list(names or ()))
    # -- recorded when set
    loss_options: dict[str, Any] | None = option(None, recorded=IF_SET, yaml=False)      # YAML: loss: {type: ...}
    optimizer_options: dict[str, Any] | None = option(None, recorded=IF_SET, yaml=False,  # YAML: optimizer: {...}
                                                      record_as=_merged_weight_decay)
    weight_decay: float = option(0.0, recorded=None, fingerprint=False)  # recorded inside optimizer_options
    schedule: Any = option(None, recorded=IF_SET, record_as=_schedule_record)
    accumulate: int = option(1, recorded=IF_SET)  # micro-batches per optimizer step
    clip_norm: float | None = option(None, recorded=IF_SET)
    clip_value: float | None = option(None, recorded=IF_SET)
    validate_every: int | None = option(None, recorded=IF_SET)  # optimizer steps; None: once per epoch
    early_stopping: Any = option(None, recorded=IF_SET, record_as=_early_stopping_record)
    deterministic: bool = option(False, recorded=IF_SET)
    regularizers: tuple[Any, ...] = option((), recorded=IF_SET, yaml=False, record_as=_type_names)
    param_groups: tuple[Any, ...] = option((), recorded=IF_SET, record_as=_rules_record)  # GroupRules (or mappings)
    # -- not recorded
    drop_last: bool = option(False, recorded=None, fingerprint=True)
    precision: str = option("auto", recorded=None, fingerprint=True, fingerprint_as=_AUTOCAST_NAMES.get)
    detect_nonfinite: bool = option(True, recorded=None)
    device: Any = option(None, recorded=None)
    num_workers: int = option(0, recorded=None)
    mode_policies: tuple[Any, ...] = option((), recorded=None, yaml=False)  # besides modes.keep_user_eval

    def __post_init__(self) -> None:
        _normalize(self)
        _check(self)

    # ------------------------------------------------------------------ making

    @classmethod
    def from_options(cls, settings: "FitSettings | None" = None, /, **options: Any) -> "FitSettings":
        """``settings`` (or the defaults) with ``options`` replaced; an unknown name is a ``TypeError`` with a hint."""
        known = {f.name for f in fields(cls)}
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, 1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"fit() got an unexpected keyword argument {name!r}{hint}")
        if settings is None:
            return cls(**options)
        if not isinstance(settings, cls):
            raise ConfigError(f"settings must be a FitSettings, got {type(settings).__name__}")
        return dataclasses.replace(settings, **options) if options else settings

    def resolve(self, train_size: int, task: str) -> "FitSettings":
        """The settings as the run uses them: a whole batch size, the metric names, the device, the precision."""
        from .metrics import check_metric_names
        from .runtime import resolve_device

        device = resolve_device(self.device)
        return dataclasses.replace(self, batch_size=_resolve_batch_size(self.batch_size, train_size),
                                   metrics=check_metric_names(self.metrics, task), device=str(device),
                                   precision=_resolve_precision(self.precision, device))

    # ------------------------------------------------------------------ derived

    def hyperparameters(self) -> dict[str, Any]:
        """What the model file records about training (call on resolved settings)."""
        out: dict[str, Any] = {}
        for item, meta in _options(type(self)):
            if meta.recorded is None:
                continue
            value = getattr(self, item.name)
            value = meta.record_as(value, self) if meta.record_as else value
            if meta.recorded == ALWAYS or (value and value != item.default):
                out[item.name] = value
        return out

    def fingerprint(self) -> dict[str, Any]:
        """The settings part of the resume fingerprint (call on resolved settings)."""
        options = {item.name: meta for item, meta in _options(type(self))}
        out = {name: value for name, value in self.hyperparameters().items() if options[name].fingerprint}
        for item, meta in _options(type(self)):
            if meta.fingerprint and meta.recorded is None:
                value = getattr(self, item.name)
                out[item.name] = meta.fingerprint_as(value) if meta.fingerprint_as else value
        return out

    @property
    def torch_device(self) -> Any:
        from .runtime import resolve_device

        return resolve_device(self.device)

    @property
    def autocast_dtype(self) -> Any:
        """The autocast dtype of resolved settings, or None for float32."""
        import torch

        return {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[_canonical_precision(self.precision)]


# ---------------------------------------------------------------------- derivations over the fields


def _options(cls: type = FitSettings) -> Iterable[tuple[dataclasses.Field, Option]]:
    return ((item, item.metadata["option"]) for item in fields(cls))


def yaml_keys(cls: type = FitSettings) -> tuple[str, ...]:
    """The training config's keys that are fit settings (``config`` adds model, data, ...)."""
    return tuple(item.name for item, meta in _options(cls) if meta.yaml)


def yaml_defaults(cls: type = FitSettings) -> dict[str, Any]:
    return {item.name: item.default for item, meta in _options(cls) if meta.yaml}


def fit_signature(function: Callable[..., Any]) -> inspect.Signature:
    """``function``'s signature with ``**options`` spelled out as the settings' keywords (for ``help(fit)``)."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    named = {p.name for p in kept}
    extra = [inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=item.default)
             for item in fields(FitSettings) if item.name not in named]
    return signature.replace(parameters=kept + extra)


# ---------------------------------------------------------------------- checks


def _normalize(settings: FitSettings) -> None:
    """Copies of mutable values (the settings must not change when the caller's dict does), plain types."""
    set_ = object.__setattr__
    for name in ("loss_options", "optimizer_options"):
        value = getattr(settings, name)
        if isinstance(value, Mapping):
            set_(settings, name, dict(value))
    if isinstance(settings.metrics, (list, tuple)):
        set_(settings, "metrics", tuple(settings.metrics))
    for name in ("regularizers", "param_groups", "mode_policies"):
        value = getattr(settings, name)
        set_(settings, name, tuple(value) if value else ())
    set_(settings, "param_groups", tuple(_group_rule(rule) for rule in settings.param_groups))
    for name in ("learning_rate", "weight_decay"):  # floats, as the config always made them
        value = getattr(settings, name)
        if value is None and name == "weight_decay":
            set_(settings, name, 0.0)
        elif isinstance(value, int) and not isinstance(value, bool):
            set_(settings, name, float(value))
    if isinstance(settings.precision, int) and not isinstance(settings.precision, bool):
        set_(settings, "precision", str(settings.precision))


def _group_rule(rule: Any) -> Any:
    """A ``GroupRule``, or a mapping of its fields (from a config) made into one."""
    from .param_groups import GroupRule

    if isinstance(rule, GroupRule):
        return rule
    if not isinstance(rule, Mapping):
        raise ConfigError(f"param_groups holds GroupRules or mappings of their fields, got {shorten_value(rule)}")
    try:
        return GroupRule(**rule)
    except TypeError as exc:
        raise ConfigError(f"param_groups: {exc}") from None


def _check_protocols(settings: FitSettings) -> None:
    for name, methods in (("regularizers", ("penalty", "state_dict", "load_state_dict")),
                          ("mode_policies", ("apply",))):
        for item in getattr(settings, name):
            missing = [m for m in methods if not callable(getattr(item, m, None))]
            if missing:
                protocol, module = (("Regularizer", "regularizers") if name == "regularizers"
                                    else ("ModePolicy", "modes"))
                raise ConfigError(f"{name}: a {type(item).__name__} has no {', '.join(m + '()' for m in missing)}; "
                                  f"a {protocol} defines them (see modelkeep.train.{module})")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check(settings: FitSettings) -> None:
    from .callbacks import make_early_stopping
    from .losses import make_loss
    from .optimizers import OPTIMIZERS
    from .schedules import make_schedule

    if not _positive_int(settings.epochs):
        raise ConfigError(f"epochs must be a positive integer, got {shorten_value(settings.epochs)}")
    if not _positive_int(settings.accumulate):
        raise ConfigError(f"accumulate must be a positive integer, got {shorten_value(settings.accumulate)}")
    if settings.validate_every is not None and not _positive_int(settings.validate_every):
        raise ConfigError(f"validate_every must be a positive number of steps, got {shorten_value(settings.validate_every)}")
    _resolve_batch_size(settings.batch_size, 1)  # the form only; the size needs the data
    if settings.precision != "auto":
        _canonical_precision(settings.precision)
    rate = settings.learning_rate
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0):
        raise ConfigError(f"learning_rate must be a positive number, got {shorten_value(rate)}")
    make_loss(settings.loss, None, **(settings.loss_options or {}))  # the name and its options
    OPTIMIZERS.get(settings.optimizer)
    make_schedule(settings.schedule)
    make_early_stopping(settings.early_stopping)
    _check_protocols(settings)
    if not isinstance(settings.num_workers, int) or settings.num_workers < 0:
        raise ConfigError(f"num_workers must be a whole number (0 or more), got {shorten_value(settings.num_workers)}")


def _resolve_batch_size(batch_size: Any, n: int) -> int:
    if batch_size is None or isinstance(batch_size, str) and batch_size in ("full", "full_batch", "all"):
        return max(n, 1)
    if batch_size == 0 and not isinstance(batch_size, bool):
        raise ConfigError("batch_size 0 is not a batch size; give a positive integer, or 'full' for "
                          "full-batch gradient descent")
    if isinstance(batch_size, str) and batch_size in ("sample", "per_sample", "sgd"):
        return 1
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, 'full' or 'sample', got {shorten_value(batch_size)}")
    return batch_size


def _canonical_precision(precision: Any) -> str:
    for name, spellings in _PRECISIONS.items():
        if precision in spellings:
            return name
    raise ConfigError(f"precision must be 'auto', '32', 'bf16' or '16', got {shorten_value(precision)}")


def _resolve_precision(precision: Any, device: Any) -> str:
    """``"32"``, ``"bf16"`` or ``"16"``; ``"auto"`` is bf16 (else fp16) mixed precision on CUDA, float32 elsewhere."""
    import torch

    if precision == "auto":
        if device.type != "cuda":
            return "32"
        return "bf16" if torch.cuda.is_bf16_supported() else "16"
    name = _canonical_precision(precision)
    if name != "32" and device.type != "cuda":
        raise ConfigError(f"mixed precision ({precision}) needs a CUDA device; this run is on {device}")
    return name

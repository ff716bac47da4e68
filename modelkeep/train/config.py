"""Training from a YAML config: what ``modelkeep train``, ``evaluate`` and ``cv`` run.

A config names the model (a zoo name, a spec file or an inline spec), the data
(a dataset name or a file, with split settings), the preprocessing, loss,
optimizer, schedule, epochs, batch size, metrics and early stopping::

    model: examples/specs/mlp.yaml          # or an inline {layers: [...]}, or a zoo name
    data: {name: digits, split: [0.8, 0.1, 0.1]}
    preprocessing: standardize
    loss: categorical_crossentropy            # or {type: ..., label_smoothing: 0.1}
    optimizer: {type: adam, weight_decay: 1.0e-4}
    learning_rate: 0.001
    schedule: {type: cosine, warmup_epochs: 1}
    epochs: 30
    batch_size: 64
    metrics: [accuracy, f1]
    early_stopping: {monitor: val_loss, patience: 5}
    checkpoint: {every_steps: 500, keep_last: 3}  # the default; `checkpoint: false` turns it off

Everything is checked (unknown keys, names, missing files) before any training,
and errors are ``ConfigError``/``DataError``/``ModelNotFoundError`` with one clear line.
The run folder layout: ``model.safetensors``, ``history.csv``/``.json``,
``curves.png``, ``config.yaml``, ``metrics.json`` and ``checkpoints/`` (see
``checkpointing.CheckpointSettings``); a run started again on the same folder
resumes from its newest good checkpoint.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, DataError, ModelNotFoundError

KNOWN_KEYS = {
    "model", "data", "preprocessing", "loss", "optimizer", "learning_rate", "weight_decay", "schedule", "epochs",
    "batch_size", "metrics", "early_stopping", "seed", "accumulate", "clip_norm", "clip_value", "validate_every",
    "deterministic", "precision", "device", "num_workers", "name", "card", "checkpoint",
}
DEFAULTS: dict[str, Any] = {
    "preprocessing": None, "loss": "categorical_crossentropy", "optimizer": "adam", "learning_rate": 1e-3,
    "weight_decay": 0.0, "schedule": None, "epochs": 10, "batch_size": 32, "metrics": None, "early_stopping": None,
    "seed": 0, "accumulate": 1, "clip_norm": None, "clip_value": None, "validate_every": None,
    "deterministic": False, "precision": "auto", "device": None, "num_workers": 0,
}


@dataclass
class TrainConfig:
    """A validated training config; ``raw`` is the resolved document (saved beside the model)."""

    raw: dict[str, Any]
    base_dir: Path = field(default_factory=Path.cwd)

    def __getitem__(self, key: str) -> Any:
        return self.raw.get(key, DEFAULTS.get(key))

    @property
    def name(self) -> str:
        return str(self.raw.get("name") or "run")


def _yaml_loader():
    """PyYAML's safe loader, reading ``1e-3`` as a float (YAML 1.1 needs ``1.0e-3``; people write ``1e-3``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?[0-9][0-9_]*\.[0-9_]*$"
                   r"|^[-+]?\.[0-9_]+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
        list("-+0123456789."))
    return Loader


def _yaml_load(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader subclass: no objects are constructed


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return _yaml_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(document: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs (dotted keys reach into mappings; values are YAML) applied to a copy of ``document``."""
    document = copy.deepcopy(document)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        target = document
        for part in parts[:-1]:
            current = target.get(part)
            if isinstance(current, str):  # `loss: mse` then --set loss.delta=2 → {type: mse, delta: 2}
                current = {"type": current} if part != "data" else {"name": current}
            if current is None:
                current = {}
            if not isinstance(current, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])!r} is not a mapping")
            target[part] = current
            target = current
        target[parts[-1]] = _parse_value(value)
    return document


def load_config(source: str | Path | dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """Read and validate a config (a YAML/JSON file or a dict), with ``--set`` style overrides."""
    import yaml

    base_dir = Path.cwd()
    if isinstance(source, dict):
        document = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelNotFoundError(f"config file {str(path)!r} does not exist")
        try:
            document = _yaml_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        base_dir = path.resolve().parent
    if not isinstance(document, dict):
        raise ConfigError("a training config must be a mapping of keys (model, data, loss, ...)")
    document = apply_overrides(document, overrides)
    unknown = sorted(set(document) - KNOWN_KEYS)
    if unknown:
        import difflib

        hints = [f"{u!r} (did you mean {difflib.get_close_matches(u, KNOWN_KEYS, 1)[0]!r}?)"
                 if difflib.get_close_matches(u, KNOWN_KEYS, 1) else repr(u) for u in unknown]
        raise ConfigError(f"unknown config key(s) {', '.join(hints)}; known keys: {', '.join(sorted(KNOWN_KEYS))}")
    for required in ("model", "data"):
        if required not in document:
            raise ConfigError(f"the config has no {required!r}; see examples/ for complete configs")
    config = TrainConfig(document, base_dir)
    _check_names(config)
    return config


def _named(value: Any, what: str) -> tuple[str, dict[str, Any]]:
    """``"adam"`` or ``{"type": "adam", ...}`` → ``("adam", {...})``."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value["type"], {k: v for k, v in value.items() if k != "type"}
    raise ConfigError(f"{what} must be a name or a mapping with a 'type', got {value!r}")


def _check_names(config: TrainConfig) -> None:
    from .callbacks import make_early_stopping
    from .losses import LOSSES
    from .optimizers import OPTIMIZERS
    from .schedules import make_schedule

    loss, _ = _named(config["loss"], "loss")
    LOSSES.get(loss)
    optimizer, options = _named(config["optimizer"], "optimizer")
    OPTIMIZERS.get(optimizer)
    learning_rate = options.get("learning_rate", options.get("lr", config["learning_rate"]))
    if not isinstance(learning_rate, (int, float)) or isinstance(learning_rate, bool) or not learning_rate > 0:
        raise ConfigError(f"learning_rate must be a positive number, got {learning_rate!r}")
    make_schedule(config["schedule"])
    make_early_stopping(config["early_stopping"])
    checkpoint_settings(config, ".")
    epochs = config["epochs"]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    _data_settings(config)


def _data_settings(config: TrainConfig) -> tuple[str, dict[str, Any], tuple[float, float, float], int]:
    """(source, reader options, split fractions, split seed); file paths resolved against the config's folder."""
    from ..data.datasets import DATASETS

    data = config["data"]
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict):
        raise ConfigError(f"data must be a dataset name or a mapping, got {data!r}")
    options = dict(data)
    source = options.pop("name", None) or options.pop("path", None)
    if source is None:
        raise ConfigError("data needs a 'name' (a bundled dataset) or a 'path' (CSV, .npy/.npz, image folder)")
    fractions = options.pop("split", (0.8, 0.1, 0.1))
    if not (isinstance(fractions, (list, tuple)) and len(fractions) == 3 and all(isinstance(f, (int, float)) for f in fractions)):
        raise ConfigError(f"data.split must be three fractions (train, validation, test), got {fractions!r}")
    split_seed = int(options.pop("seed", config["seed"]))
    source = str(source)
    if source not in DATASETS or Path(source).exists():
        path = Path(source)
        if not path.is_absolute() and not path.exists() and (config.base_dir / path).exists():
            path = config.base_dir / path
        if not path.exists():
            if not path.suffix and "/" not in source:
                raise DataError(DATASETS.unknown_message(source) + " Or give a path to a CSV, .npy/.npz file or image folder.")
            raise ModelNotFoundError(f"data file {source!r} does not exist")
        source = str(path)
    return source, options, (float(fractions[0]), float(fractions[1]), float(fractions[2])), split_seed


def load_config_data(config: TrainConfig):
    """The whole dataset the config names (not yet split)."""
    from ..data.datasets import load_data

    source, options, _, _ = _data_settings(config)
    return load_data(source, **options)


def build_model(config: TrainConfig, dataset: Any):
    """The network the config names, built with the run's seed, checked against the data's sample shape.

    ``model`` is a zoo name (``lenet5``; its input shape and number of classes follow the data),
    ``{zoo: NAME, ...options}``, a spec file, or an inline spec (a mapping with ``layers``).
    """
    from ..nn import build
    from ..spec import load_spec

    model = config["model"]
    if isinstance(model, dict) and "zoo" in model:
        name, options = str(model["zoo"]), {k: v for k, v in model.items() if k != "zoo"}
        spec = _zoo_spec(name, options, dataset)
    elif isinstance(model, str):
        path = Path(model)
        if not path.is_absolute() and not path.exists() and (config.base_dir / path).exists():
            path = config.base_dir / path
        spec = load_spec(path) if path.is_file() else _zoo_spec(model, {}, dataset)
    elif isinstance(model, dict):
        spec = load_spec(model)
    else:
        raise ConfigError(f"model must be a zoo name, a spec file or an inline spec, got {model!r}")
    expected = tuple(spec.input_shape)
    if expected != tuple(dataset.input_shape):
        raise DataError(f"the model expects samples of shape {list(expected)} but the data {dataset.name!r} has "
                        f"{list(dataset.input_shape)}; change the model's Input shape or set data.shape")
    return build(spec, seed=int(config["seed"]))


def _zoo_spec(name: str, options: dict[str, Any], dataset: Any):
    """A zoo model's spec, its input shape and number of classes taken from the data unless given."""
    from ..zoo import ZOO, resolve_spec

    options = dict(options)
    if name in ZOO:
        known = ZOO.get(name).options()
        if "num_classes" in known and dataset.num_classes and "num_classes" not in options:
            options["num_classes"] = dataset.num_classes
    return resolve_spec(name, overrides=options, input_shape=options.pop("input_shape", None) or list(dataset.input_shape))


def fit_options(config: TrainConfig, *, progress: Any = "auto") -> dict[str, Any]:
    """Keyword arguments for ``fit`` from the config."""
    from ..data.preprocess import make_preprocessing

    loss, loss_options = _named(config["loss"], "loss")
    optimizer, optimizer_options = _named(config["optimizer"], "optimizer")
    learning_rate = optimizer_options.pop("learning_rate", optimizer_options.pop("lr", config["learning_rate"]))
    return {
        "loss": loss, "loss_options": loss_options, "optimizer": optimizer, "optimizer_options": optimizer_options,
        "learning_rate": float(learning_rate), "weight_decay": float(config["weight_decay"] or 0.0),
        "schedule": config["schedule"], "epochs": config["epochs"], "batch_size": config["batch_size"],
        "metrics": config["metrics"], "early_stopping": config["early_stopping"], "seed": int(config["seed"]),
        "accumulate": config["accumulate"], "clip_norm": config["clip_norm"], "clip_value": config["clip_value"],
        "validate_every": config["validate_every"], "deterministic": bool(config["deterministic"]),
        "precision": str(config["precision"]), "device": config["device"], "num_workers": int(config["num_workers"]),
        "preprocessing": make_preprocessing(config["preprocessing"]), "progress": progress,
    }


CHECKPOINTS = "checkpoints"  # the checkpoint folder inside a run folder


def checkpoint_settings(config: TrainConfig, run_dir: str | Path):
    """The config's ``checkpoint:`` section (on by default) with its folder inside ``run_dir``."""
    from .checkpointing import CheckpointSettings

    return CheckpointSettings.from_config(config.raw.get("checkpoint"), directory=Path(run_dir) / CHECKPOINTS)


@dataclass
class TrainRun:
    """What ``run_training`` produced."""

    result: Any
    run_dir: Path
    model_path: Path
    files: list[Path]


def run_training(config: TrainConfig, run_dir: str | Path, *, progress: Any = "auto", resume: bool = True,
                 callbacks: Sequence[Any] = ()) -> TrainRun:
    """Split the data, train, test once, and write the model file, history, curves, config and metrics.

    Checkpoints go to ``run_dir/checkpoints``; with ``resume`` a folder that holds some continues
    from the newest good one (``resume=False`` moves them into ``checkpoints/previous/`` first).
    """
    import yaml

    from ..artifact import save
    from ..checkpoint.atomic import atomic_write
    from ..data.split import split_dataset
    from .fit import fit

    dataset = load_config_data(config)
    _, _, fractions, split_seed = _data_settings(config)
    splits = split_dataset(dataset, fractions=fractions, seed=split_seed)
    model = build_model(config, dataset)
    result = fit(model, splits.train, splits.validation if len(splits.validation) else None,
                 splits.test if len(splits.test) else None, **fit_options(config, progress=progress),
                 checkpoint=checkpoint_settings(config, run_dir), resume=resume, callbacks=list(callbacks))
    source, options, _, _ = _data_settings(config)
    result.hyperparameters["data"] = {"source": str(config["data"]["name"] if isinstance(config["data"], dict) and "name" in config["data"] else source),
                                      "options": options, "split": list(fractions), "split_seed": split_seed}
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    card = config.raw.get("card")
    model_path = save(result, run_dir / "model.safetensors", **({"card": card} if card else {}))
    files = [model_path, *result.history.write(run_dir)]
    with atomic_write(run_dir / "config.yaml") as handle:
        handle.write(yaml.safe_dump(config.raw, sort_keys=False).encode("utf-8"))
    files.append(run_dir / "config.yaml")
    document = {"test": _json_safe(result.test_report), "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early, "epochs_run": len(result.history)}
    with atomic_write(run_dir / "metrics.json") as handle:
        handle.write((json.dumps(document, indent=2) + "\n").encode("utf-8"))
    files.append(run_dir / "metrics.json")
    return TrainRun(result, run_dir, model_path, files)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def cross_validate(config: TrainConfig, folds: int, *, progress: Any = "auto", on_fold: Any = None) -> dict[str, Any]:
    """K-fold cross-validation of the config over its whole dataset: each fold trains on the other k-1
    folds and is scored on its own held-out fold (which early stopping, if configured, also monitors)."""
    from ..data.split import kfold_splits
    from .fit import fit

    dataset = load_config_data(config)
    _, _, _, split_seed = _data_settings(config)
    results = []
    for fold in kfold_splits(dataset, folds, seed=split_seed):
        model = build_model(config, dataset)
        result = fit(model, fold.train, fold.validation, **fit_options(config, progress=progress))
        scores = {k.removeprefix("val_"): v for k, v in result.history.records[-1].items() if k.startswith("val_")}
        if result.best_epoch is not None:  # early stopping restored the best weights: report those
            best = result.history.records[result.best_epoch - 1]
            scores = {k.removeprefix("val_"): v for k, v in best.items() if k.startswith("val_")}
        entry = {"fold": fold.index + 1, "train_samples": len(fold.train), "validation_samples": len(fold.validation),
                 "epochs_run": len(result.history), **scores}
        results.append(entry)
        if on_fold is not None:
            on_fold(entry)
    import numpy as np

    keys = [k for k in results[0] if k not in ("fold", "train_samples", "validation_samples", "epochs_run")]
    summary = {k: {"mean": float(np.mean([r[k] for r in results])), "std": float(np.std([r[k] for r in results]))}
               for k in keys}
    return {"folds": results, "summary": summary, "k": folds, "dataset": dataset.name, "samples": len(dataset)}

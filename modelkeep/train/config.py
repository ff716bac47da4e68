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
    save_optimizer: true                      # keep the optimizer state in model.safetensors (off by default)

Everything is checked (unknown keys, names, missing files) before any training,
and errors are ``ConfigError``/``DataError``/``ModelNotFoundError`` with one clear line.
The run folder layout: ``model.safetensors``, ``history.csv``/``.json``,
``curves.png``, ``config.yaml``, ``metrics.json`` and ``checkpoints/`` (see
``checkpointing.CheckpointSettings``); a run started again on the same folder
resumes from its newest good checkpoint.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._overrides import apply_overrides as _apply_overrides
from .._overrides import load_yaml, shorten_value
from ..errors import ConfigError, DataError, ModelNotFoundError
from .settings import FitSettings, yaml_defaults, yaml_keys

MAX_CONFIG_BYTES = 1 << 20
CONFIG_KEYS = ("model", "data", "preprocessing", "name", "card", "checkpoint", "continue", "strategy",
               "save_optimizer")  # the rest are FitSettings fields
KNOWN_KEYS = frozenset(CONFIG_KEYS) | frozenset(yaml_keys())
DEFAULTS: dict[str, Any] = {"preprocessing": None, "save_optimizer": False, **yaml_defaults()}


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


def check_run_name(name: Any) -> str:
    """A run's ``name`` is a name, not a path: it becomes ``runs/<name>``, so it may not climb out of
    ``runs/`` (``..``), start elsewhere (an absolute path) or nest (a path separator)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name must be a non-empty text, got {shorten_value(name)}")
    bad = ("/" in name or "\\" in name or "\0" in name or name in (".", "..") or Path(name).is_absolute()
           or any(ord(c) < 32 for c in name) or len(name) > 200)
    if bad:
        raise ConfigError(f"name {name[:60]!r} is not a plain name (it is the run folder runs/<name>): no path "
                          "separators, '..' or absolute paths; to write elsewhere use --run-dir")
    return name


def _promote(key: str, value: str) -> dict[str, Any]:
    """``loss: mse`` then ``--set loss.delta=2`` gives ``{type: mse, delta: 2}``; ``data: digits`` a ``name``."""
    return {"name": value} if key == "data" else {"type": value}


def apply_overrides(document: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs (dotted keys reach into mappings; values are YAML) applied to a copy of ``document``."""
    return _apply_overrides(document, overrides, error=ConfigError, promote=_promote)


def load_config(source: str | Path | dict[str, Any], overrides: Sequence[str] = (), *,
                extra_keys: Sequence[str] = ()) -> TrainConfig:
    """Read and validate a config (a YAML/JSON file or a dict), with ``--set`` style overrides.

    ``extra_keys`` are keys a higher layer reads (``modelkeep.transfer.config``: ``base``, ``transfer``); a
    document holding one of them may leave out ``model``, and that layer checks the rest."""
    base_dir = Path.cwd()
    if isinstance(source, dict):
        document = source
    else:
        path = Path(source)
        if path.is_dir():
            raise ConfigError(f"{str(path)!r} is a folder, not a config file; give a .yaml training config "
                              "(see examples/)")
        if not path.is_file():
            raise ModelNotFoundError(f"config file {str(path)!r} does not exist")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is {path.stat().st_size:,} bytes; a training config is at most "
                              f"{MAX_CONFIG_BYTES:,}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        document = load_yaml(text, what=str(path))
        base_dir = path.resolve().parent
    if not isinstance(document, dict):
        raise ConfigError("a training config must be a mapping of keys (model, data, loss, ...)")
    document = apply_overrides(document, overrides)
    known = KNOWN_KEYS | frozenset(extra_keys)
    unknown = sorted(set(document) - known)
    if unknown:
        import difflib

        hints = [f"{u!r} (did you mean {difflib.get_close_matches(u, known, 1)[0]!r}?)"
                 if difflib.get_close_matches(u, known, 1) else repr(u) for u in unknown]
        raise ConfigError(f"unknown config key(s) {', '.join(hints)}; known keys: {', '.join(sorted(known))}")
    for required in ("data",) if set(extra_keys) & set(document) else ("model", "data"):
        if required not in document:
            raise ConfigError(f"the config has no {required!r}; see examples/ for complete configs")
    if "name" in document:
        check_run_name(document["name"])
    if not isinstance(document.get("save_optimizer", False), bool):
        raise ConfigError(f"save_optimizer must be true or false, got {shorten_value(document['save_optimizer'])}")
    config = TrainConfig(document, base_dir)
    from .strategy import check_strategy_name  # imports torch: only once a config is read

    check_strategy_name(document.get("strategy"))  # auto | ddp | fsdp (docs/scale.md)
    fit_settings(config)  # every training option is checked here, before any data is read
    checkpoint_settings(config, ".")
    _data_settings(config)
    return config


def _named(value: Any, what: str) -> tuple[str, dict[str, Any]]:
    """``"adam"`` or ``{"type": "adam", ...}`` → ``("adam", {...})``."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value["type"], {k: v for k, v in value.items() if k != "type"}
    raise ConfigError(f"{what} must be a name or a mapping with a 'type', got {shorten_value(value)}")


def _data_settings(config: TrainConfig) -> tuple[str, dict[str, Any], tuple[float, float, float], int]:
    """(source, reader options, split fractions, split seed); file paths resolved against the config's folder."""
    from ..data.datasets import DATASETS

    data = config["data"]
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict):
        raise ConfigError(f"data must be a dataset name or a mapping, got {shorten_value(data)}")
    options = dict(data)
    source = options.pop("name", None) or options.pop("path", None)
    if source is None:
        raise ConfigError("data needs a 'name' (a bundled dataset) or a 'path' (CSV, .npy/.npz, image folder)")
    fractions = options.pop("split", (0.8, 0.1, 0.1))
    if not (isinstance(fractions, (list, tuple)) and len(fractions) == 3 and all(isinstance(f, (int, float)) for f in fractions)):
        raise ConfigError(f"data.split must be three fractions (train, validation, test), got {shorten_value(fractions)}")
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


def load_config_data(config: TrainConfig, **read_options: Any):
    """The whole dataset the config names (not yet split); ``read_options`` (a model's ``input_shape``,
    ``labels``) go to the reader beside the config's own."""
    from ..data.datasets import load_data

    source, options, _, _ = _data_settings(config)
    return load_data(source, **options, **read_options)


def split_config_data(config: TrainConfig, dataset: Any):
    """The config's train/validation/test split of ``dataset`` (``data.split``, seeded by ``data.seed``)."""
    from ..data.split import split_dataset

    _, _, fractions, split_seed = _data_settings(config)
    return split_dataset(dataset, fractions=fractions, seed=split_seed)


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
        raise ConfigError(f"model must be a zoo name, a spec file or an inline spec, got {shorten_value(model)}")
    expected = tuple(spec.input_shape)
    if expected != tuple(dataset.input_shape):
        raise DataError(f"the model expects samples of shape {list(expected)} but the data {dataset.name!r} has "
                        f"{list(dataset.input_shape)}; change the model's Input shape or set data.shape")
    return build(spec, seed=int(config["seed"]))


def _data_for_model(dataset: Any, model: Any) -> Any:
    """Per-position targets (a language model's next tokens) checked against the model's sequence output,
    their labels inferred from the data widened to all its classes; any other dataset as it is."""
    from ..data.targets import sequence_labels

    spec = getattr(model, "spec", None)
    if spec is None or not hasattr(dataset, "y"):
        return dataset
    return sequence_labels(dataset, tuple(spec.output_shape), dataset.name)


def _zoo_spec(name: str, options: dict[str, Any], dataset: Any):
    """A zoo model's spec, its input shape and number of classes taken from the data unless given."""
    from ..zoo import ZOO, resolve_spec

    options = dict(options)
    if name in ZOO:
        known = ZOO.get(name).options()
        if "num_classes" in known and dataset.num_classes and "num_classes" not in options:
            options["num_classes"] = dataset.num_classes
    return resolve_spec(name, overrides=options, input_shape=options.pop("input_shape", None) or list(dataset.input_shape))


def fit_settings(config: TrainConfig) -> FitSettings:
    """The config's ``FitSettings``: its keys are the settings' fields, except that ``loss`` and
    ``optimizer`` may be mappings with a ``type`` and the options (an optimizer's may hold the
    learning rate, as ``learning_rate`` or ``lr``)."""
    values = {key: config[key] for key in yaml_keys()}
    values["loss"], values["loss_options"] = _named(values["loss"], "loss")
    values["optimizer"], options = _named(values["optimizer"], "optimizer")
    values["learning_rate"] = options.pop("learning_rate", options.pop("lr", values["learning_rate"]))
    values["optimizer_options"] = options
    return FitSettings(**values)


def fit_options(config: TrainConfig, *, progress: Any = "auto") -> dict[str, Any]:
    """Keyword arguments for ``fit`` from the config: the settings, the preprocessing, the progress output."""
    from ..processing.preprocess import make_preprocessing

    return {"settings": fit_settings(config), "preprocessing": make_preprocessing(config["preprocessing"]),
            "progress": progress}


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
                 callbacks: Sequence[Any] = (), init_from: Any = None, old_test: Any = None) -> TrainRun:
    """Split the data, train, test once, and write the model file, history, curves, config and metrics.

    Checkpoints go to ``run_dir/checkpoints``; with ``resume`` a folder that holds some continues
    from the newest good one (``resume=False`` moves them into ``checkpoints/previous/`` first).
    """
    from .distributed import run_folder
    from .fit import fit

    run_dir = Path(run_dir)  # one process, or this one of torchrun's (docs/scale.md); the coordinator locks the folder
    with run_folder(run_dir, config["strategy"], prepare=prepare_run_dir) as strategy:
        if config["save_optimizer"] and not getattr(strategy, "replicated", True):  # said before any step
            raise ConfigError("save_optimizer needs the whole optimizer state in one process; FSDP2 splits it "
                              "across processes: leave save_optimizer off (its sharded checkpoints keep it)")
        from .continued_config import continued_run

        continued = continued_run(config, init_from, old_test)  # None unless continuing a saved model
        dataset = load_config_data(config, **(continued.read_options if continued else {}))
        model = continued.parent.module if continued else build_model(config, dataset)
        splits = split_config_data(config, _data_for_model(dataset, model))
        options = {**fit_options(config, progress=progress), **(continued.fit_options if continued else {})}
        result = fit(None if continued else model, splits.train, splits.validation if len(splits.validation) else None,
                     splits.test if len(splits.test) else None, **options,
                     checkpoint=checkpoint_settings(config, run_dir), resume=resume, callbacks=list(callbacks),
                     strategy=strategy)
        if not strategy.is_coordinator:  # the coordinator alone writes the run folder
            return TrainRun(result, run_dir, run_dir / "model.safetensors", [])
        return save_run(config, result, run_dir)


def save_run(config: TrainConfig, result: Any, run_dir: Path, *, model_path: str | Path | None = None) -> TrainRun:
    """Write a finished run's model file (``run_dir/model.safetensors`` unless ``model_path``), history,
    curves, config and metrics; the data source and split go into the file's hyperparameters, and the
    optimizer state into the file with ``save_optimizer: true`` (what ``--init-from`` continues)."""
    import yaml

    from ..artifact import save
    from ..io.atomic import atomic_write_text
    from .history import write_history

    source, options, fractions, split_seed = _data_settings(config)
    data = config["data"]
    result.hyperparameters["data"] = {"source": str(data["name"] if isinstance(data, dict) and "name" in data else source),
                                      "options": options, "split": list(fractions), "split_seed": split_seed}
    card = config.raw.get("card")
    optimizer = {"optimizer": result.optimizer} if config["save_optimizer"] else {}
    model_path = save(result, model_path or run_dir / "model.safetensors", **optimizer, **({"card": card} if card else {}))
    files = [model_path, *write_history(result.history, run_dir)]
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.raw, sort_keys=False))
    files.append(run_dir / "config.yaml")
    document = {"test": _json_safe(result.test_report), "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early, "epochs_run": len(result.history)}
    atomic_write_text(run_dir / "metrics.json", json.dumps(document, indent=2) + "\n")
    files.append(run_dir / "metrics.json")
    return TrainRun(result, run_dir, Path(model_path), files)


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder, and refuse one this process cannot write into (checked before training)."""
    import os

    from ..errors import StorageError

    if run_dir.exists() and not run_dir.is_dir():
        raise StorageError(f"the run folder {str(run_dir)!r} is a file; give --run-dir a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the run folder {str(run_dir)!r}: {exc.strerror or exc}; "
                           "choose another --run-dir") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise StorageError(f"the run folder {str(run_dir)!r} is not writable; choose another --run-dir "
                           "or change its permissions")


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
        result = fit(model, _data_for_model(fold.train, model), _data_for_model(fold.validation, model),
                     **fit_options(config, progress=progress))
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

"""Training configs that start from an existing model: a ``base:`` and a ``transfer:`` section.

What ``modelkeep train CONFIG`` runs when the config has either key, and what ``modelkeep finetune``
builds from its flags::

    base: runs/fashion/model.safetensors   # a model file; or {zoo: lenet5, ...options} (random initial weights)
    data: {name: mnist, split: [0.8, 0.1, 0.1]}
    transfer: {head: 10, freeze: all_but_head, l2sp: 0.01, batchnorm: frozen}   # TransferSettings' fields
    epochs: 5
    learning_rate: 0.001

Every other key is a ``modelkeep train`` key (``modelkeep.train.config``). Instead of ``base:`` a config may
give ``model:`` (a spec or a zoo model, built with the run's seed) with a ``transfer:`` section. A relative
``base`` path is found from the working folder first, then from the config's folder. The run folder, its
checkpoints and resuming are those of ``run_training``: the same command, run again, resumes. This module
checks and assembles; the fine-tuning itself is ``finetune``'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .._overrides import shorten_value
from ..errors import ConfigError, ModelNotFoundError
from ..train.config import TrainConfig, load_config

TRANSFER_KEYS = ("base", "transfer")

__all__ = ["TRANSFER_KEYS", "is_transfer_config", "load_training_config", "run_config", "run_transfer",
           "transfer_settings"]


def is_transfer_config(config: TrainConfig | dict[str, Any]) -> bool:
    """Whether the config starts from a base model or has a ``transfer:`` section."""
    document = config.raw if isinstance(config, TrainConfig) else config
    return any(key in document for key in TRANSFER_KEYS)


def load_training_config(source: str | Path | dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """Any training config (a YAML/JSON file or a dict), a plain one or one with ``base:``/``transfer:``,
    checked whole before any data is read."""
    config = load_config(source, overrides, extra_keys=TRANSFER_KEYS)
    if not is_transfer_config(config):
        return config
    raw = config.raw
    if "base" in raw and "model" in raw:
        raise ConfigError("the config has both 'model' (a new network) and 'base' (a model to start from); "
                          "keep one")
    if "base" not in raw and "model" not in raw:
        raise ConfigError("a 'transfer' section needs a 'base' (a model file or {zoo: NAME}) or a 'model' to "
                          "start from")
    base_source(config)
    transfer_settings(config)
    return config


def transfer_settings(config: TrainConfig):
    """The config's ``transfer:`` section as ``TransferSettings`` (unknown keys are a ``ConfigError``)."""
    from .settings import TransferSettings

    section = config.raw.get("transfer")
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"transfer must be a mapping of settings (head, freeze, l2sp, ...), got "
                          f"{shorten_value(section)}")
    return TransferSettings.from_dict(section)


def base_source(config: TrainConfig) -> tuple[str, Any]:
    """Where the run starts: ``("file", path)``, ``("zoo", {zoo: NAME, ...options})`` or ``("model", None)``
    (the config's ``model:``, built fresh)."""
    from ..zoo import ZOO

    if "base" not in config.raw:
        return "model", None
    base = config.raw["base"]
    if isinstance(base, dict):
        if set(base) == {"path"}:
            base = base["path"]
        elif isinstance(base.get("zoo"), str):
            return "zoo", dict(base)
        else:
            raise ConfigError(f"base must be a model file, a zoo name or {{zoo: NAME, ...options}}, got "
                              f"{shorten_value(base)}")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"base must be a model file, a zoo name or {{zoo: NAME, ...options}}, got "
                          f"{shorten_value(base)}")
    path = Path(base)
    if not path.is_absolute() and not path.exists() and (config.base_dir / path).exists():
        path = config.base_dir / path
    if path.is_dir():
        raise ConfigError(f"base {base!r} is a folder; give a model file (.safetensors)")
    if path.is_file():
        return "file", path
    if base in ZOO and not path.suffix:
        return "zoo", {"zoo": base}
    raise ModelNotFoundError(f"base model file {base!r} does not exist (nor is it a zoo model; see "
                             "`modelkeep zoo list`)")


def _base_and_data(config: TrainConfig) -> tuple[Any, Any]:
    """The model to start from (a loaded file, or a module built with the run's seed) and the whole dataset,
    read for that model: in-memory samples reshaped to its input, classes matched to its labels when its
    head stays."""
    from ..train.config import _data_for_model, build_model, load_config_data

    kind, source = base_source(config)
    if kind != "file":
        dataset = load_config_data(config)
        built = config if kind == "model" else TrainConfig({**config.raw, "model": source}, config.base_dir)
        module = build_model(built, dataset)
        return module, _data_for_model(dataset, module)
    from ..artifact import load

    model = load(source)
    options: dict[str, Any] = {}
    shape = model._input_shape()
    if shape is not None and all(isinstance(d, int) for d in shape):
        options["input_shape"] = tuple(shape)
    if model.labels is not None and transfer_settings(config).head is None:
        options["labels"] = tuple(model.labels)
    return model, load_config_data(config, **options)


def run_transfer(config: TrainConfig, run_dir: str | Path, *, progress: Any = "auto", resume: bool = True,
                 callbacks: Sequence[Any] = (), model_path: str | Path | None = None):
    """Fine-tune the config's base on its data and write the run folder as ``run_training`` does (the model
    file to ``model_path`` if given). Checkpoints go to ``run_dir/checkpoints``; a folder that holds some
    continues from the newest good one (``resume=False`` moves them into ``checkpoints/previous/``)."""
    from ..io.lock import FolderLock
    from ..train.config import checkpoint_settings, fit_options, prepare_run_dir, save_run, split_config_data
    from .tuning import finetune

    run_dir = Path(run_dir)
    prepare_run_dir(run_dir)
    with FolderLock(run_dir, purpose="fine-tuning run"):
        base, dataset = _base_and_data(config)
        splits = split_config_data(config, dataset)
        options = fit_options(config, progress=progress)
        if config.raw.get("preprocessing") is None:
            options.pop("preprocessing")  # a base file's own preprocessing stays
        result = finetune(base, splits.train, splits.validation if len(splits.validation) else None,
                          splits.test if len(splits.test) else None, transfer=transfer_settings(config),
                          **options, checkpoint=checkpoint_settings(config, run_dir), resume=resume,
                          callbacks=list(callbacks))
        return save_run(config, result, run_dir, model_path=model_path)


def run_config(config: TrainConfig, run_dir: str | Path, **options: Any):
    """``run_transfer`` for a config with ``base:``/``transfer:``, ``run_training`` for any other."""
    from ..train.config import run_training

    if is_transfer_config(config):
        return run_transfer(config, run_dir, **options)
    return run_training(config, run_dir, **options)

"""FitSettings: one declaration per option, from which hyperparameters, the resume fingerprint and YAML keys derive."""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import pytest
import torch

from modelkeep.data import load_dataset, split_dataset
from modelkeep.errors import ConfigError
from modelkeep.nn import build
from modelkeep.train import EarlyStopping, FitSettings, fit
from modelkeep.train.config import DEFAULTS, KNOWN_KEYS, fit_settings, load_config
from modelkeep.train.schedules import Cosine
from modelkeep.train.settings import IF_SET, option, yaml_defaults, yaml_keys

IRIS_MLP = {"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 8, "activation": "relu"},
                       {"kind": "Dense", "units": 3}]}


def legacy_record(n, task, *, loss="categorical_crossentropy", optimizer="adam", learning_rate=1e-3, epochs=10,
                  batch_size=32, seed=0, metrics=None, loss_options=None, optimizer_options=None, weight_decay=0.0,
                  schedule=None, accumulate=1, clip_norm=None, clip_value=None, validate_every=None,
                  early_stopping=None, deterministic=False, drop_last=False):
    """What fit recorded and fingerprinted before FitSettings existed (a frozen copy of the old code, CPU)."""
    from modelkeep.train.metrics import check_metric_names

    batch_size = max(n, 1) if batch_size == "full" else batch_size
    optimizer_options = dict(optimizer_options or {})
    if weight_decay:
        optimizer_options["weight_decay"] = weight_decay
    hyperparameters = {"loss": loss, "optimizer": optimizer, "learning_rate": learning_rate, "epochs": epochs,
                       "batch_size": batch_size, "seed": seed, "metrics": list(check_metric_names(metrics, task))}
    for key, value in (("loss_options", loss_options), ("optimizer_options", optimizer_options),
                       ("schedule", schedule if not isinstance(schedule, Cosine) else type(schedule).__name__),
                       ("accumulate", accumulate if accumulate != 1 else None), ("clip_norm", clip_norm),
                       ("clip_value", clip_value), ("validate_every", validate_every),
                       ("early_stopping", early_stopping if not isinstance(early_stopping, EarlyStopping) else True),
                       ("deterministic", deterministic or None)):
        if value:
            hyperparameters[key] = value
    return hyperparameters, {**hyperparameters, "drop_last": drop_last, "precision": "float32"}


CASES = [
    {},
    {"loss": "mse", "optimizer": "sgd", "learning_rate": 0.5, "epochs": 3, "batch_size": "full", "seed": 7},
    {"weight_decay": 1e-4},
    {"weight_decay": 1e-4, "optimizer_options": {"momentum": 0.9}, "optimizer": "sgd"},
    {"loss_options": {"label_smoothing": 0.1}, "loss_options_empty": None},
    {"loss_options": {}, "optimizer_options": {}},
    {"schedule": {"type": "cosine", "warmup_epochs": 1}, "accumulate": 2, "clip_norm": 1.0, "clip_value": 0.5},
    {"schedule": Cosine(), "early_stopping": EarlyStopping(patience=2)},
    {"early_stopping": {"patience": 3}, "validate_every": 5, "deterministic": True, "drop_last": True},
    {"early_stopping": 0, "accumulate": 1, "clip_norm": 0.0, "metrics": ["f1_macro", "accuracy"]},
]


@pytest.mark.parametrize("options", CASES)
def test_recorded_hyperparameters_and_fingerprint_are_what_fit_always_wrote(options):
    options = {k: v for k, v in options.items() if k != "loss_options_empty"}
    settings = FitSettings(**options, device="cpu").resolve(120, "classification")
    recorded, fingerprint = legacy_record(120, "classification", **options)
    assert settings.hyperparameters() == recorded
    assert list(settings.hyperparameters()) == list(recorded)  # the order of the file's keys too
    assert settings.fingerprint() == fingerprint  # so a checkpoint folder written before still resumes


def test_a_new_option_is_declared_once_and_shows_up_everywhere():
    @dataclass(frozen=True)
    class Extended(FitSettings):
        label_noise: float = option(0.0, recorded=IF_SET)
        log_every: int = option(10, recorded=None, fingerprint=False)

    plain = Extended(device="cpu").resolve(10, "classification")
    noisy = Extended(label_noise=0.2, device="cpu").resolve(10, "classification")
    assert "label_noise" not in plain.hyperparameters() and "label_noise" not in plain.fingerprint()
    assert noisy.hyperparameters()["label_noise"] == 0.2 and noisy.fingerprint()["label_noise"] == 0.2
    assert "log_every" not in noisy.fingerprint() and "log_every" not in noisy.hyperparameters()
    assert {"label_noise", "log_every"} <= set(yaml_keys(Extended))
    assert yaml_defaults(Extended)["log_every"] == 10


def test_yaml_keys_and_defaults_come_from_the_settings():
    assert set(yaml_keys()) <= KNOWN_KEYS
    assert KNOWN_KEYS - set(yaml_keys()) == {"model", "data", "preprocessing", "name", "card", "checkpoint", "continue",
                                            "strategy", "save_optimizer"}
    for key in ("learning_rate", "weight_decay", "epochs", "batch_size", "seed", "precision", "device"):
        assert DEFAULTS[key] == FitSettings.__dataclass_fields__[key].default
    assert "loss_options" not in KNOWN_KEYS  # it comes through `loss: {type: ..., ...}`


def test_a_config_becomes_settings_with_the_mapping_forms_unfolded():
    config = load_config({"model": "mlp", "data": "digits", "loss": {"type": "huber", "delta": 2},
                          "optimizer": {"type": "adamw", "lr": 0.01, "weight_decay": 1e-3}, "precision": 32},
                         ["epochs=3", "learning_rate=1e-3"])
    settings = fit_settings(config)
    assert (settings.loss, settings.loss_options) == ("huber", {"delta": 2})
    assert (settings.optimizer, settings.optimizer_options) == ("adamw", {"weight_decay": 1e-3})
    assert settings.learning_rate == 0.01  # the optimizer's own lr wins, as before
    assert settings.epochs == 3 and settings.precision == "32"


@pytest.mark.parametrize("options, message", [
    ({"epochs": 0}, "epochs must be a positive integer, got 0"),
    ({"accumulate": 0}, "accumulate must be a positive integer"),
    ({"validate_every": -1}, "validate_every must be a positive number of steps"),
    ({"batch_size": -1}, "batch_size must be a positive integer, 'full' or 'sample'"),
    ({"precision": "fp8"}, "precision must be 'auto', '32', 'bf16' or '16'"),
    ({"learning_rate": 0}, "learning_rate must be a positive number"),
    ({"loss": "msee"}, "did you mean 'mse'"),
    ({"optimizer": "adamm"}, "did you mean 'adam'"),
    ({"schedule": "cosin"}, "unknown schedule 'cosin'"),
    ({"loss_options": {"label_smoothing": 2}}, "label_smoothing"),
    ({"param_groups": [{"pattern": "x", "lr_scale": 0}]}, "lr_scale must be a number > 0"),
    ({"regularizers": [object()]}, "regularizers: a object has no penalty(), state_dict(), load_state_dict()"),
    ({"mode_policies": [object()]}, "a ModePolicy defines them (see modelkeep.train.modes)"),
])
def test_values_are_checked_when_the_settings_are_made(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        FitSettings(**options)


def test_mixed_precision_on_the_cpu_is_refused_at_resolve():
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        FitSettings(precision="bf16", device="cpu").resolve(10, "classification")


def test_fit_keywords_are_the_settings_fields():
    names = set(inspect.signature(fit).parameters)
    assert set(FitSettings.__dataclass_fields__) <= names  # help(fit) shows every option
    with pytest.raises(TypeError, match="did you mean 'epochs'"):
        FitSettings.from_options(epoch=3)


def test_settings_object_and_keywords_train_identically():
    splits = split_dataset(load_dataset("iris"), seed=0)
    by_keywords = build(IRIS_MLP, seed=0)
    fit(by_keywords, splits.train, epochs=2, batch_size=16, learning_rate=0.01, progress=False)
    by_settings = build(IRIS_MLP, seed=0)
    result = fit(by_settings, splits.train, settings=FitSettings(epochs=2, batch_size=16), learning_rate=0.01,
                 progress=False)
    for name, value in by_keywords.state_dict().items():
        assert torch.equal(value, by_settings.state_dict()[name]), name
    assert result.hyperparameters["learning_rate"] == 0.01 and result.hyperparameters["epochs_run"] == 2
    assert list(result.hyperparameters)[:5] == ["loss", "optimizer", "learning_rate", "epochs", "epochs_run"]


def test_settings_are_frozen_and_copy_what_they_are_given():
    options = {"label_smoothing": 0.1}
    settings = FitSettings(loss_options=options)
    options["label_smoothing"] = 0.5
    assert settings.loss_options == {"label_smoothing": 0.1}
    with pytest.raises(AttributeError):
        settings.epochs = 3  # type: ignore[misc]

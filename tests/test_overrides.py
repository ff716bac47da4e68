"""The one ``--set KEY=VALUE`` parser: the same value means the same thing in every command, and reads are bounded."""
from __future__ import annotations

import json

import pytest

from modelkeep._overrides import (MAX_OVERRIDE_CHARS, apply_overrides, load_yaml, parse_overrides, parse_value,
                                  split_override)
from modelkeep.cli.main import main
from modelkeep.cli.params import parse_overrides as params_overrides
from modelkeep.errors import ConfigError, SpecError
from modelkeep.train.config import fit_settings, load_config


def test_1e_minus_3_is_a_float_through_both_paths():
    assert params_overrides(["learning_rate=1e-3"]) == {"learning_rate": 0.001}  # params / zoo show
    config = load_config({"model": "mlp", "data": "digits", "optimizer": "adamw"},
                         ["learning_rate=1e-3", "optimizer.weight_decay=5E-4"])
    assert config.raw["learning_rate"] == 0.001 and isinstance(config.raw["learning_rate"], float)
    assert fit_settings(config).optimizer_options == {"weight_decay": 0.0005}  # train / cv


def test_values_are_yaml_scalars_lists_and_mappings():
    assert parse_overrides(["a=3", "b=1_000", "c=.5", "d=null", "e=true", "f=[64, 32]", "g={type: mse}", "h=relu",
                            "i=", "j='1e-3'"]) == {
        "a": 3, "b": 1000, "c": 0.5, "d": None, "e": True, "f": [64, 32], "g": {"type": "mse"}, "h": "relu",
        "i": None, "j": "1e-3"}
    assert parse_overrides(["fc.units=5"]) == {"fc.units": 5}  # dotted keys are kept whole here...
    assert apply_overrides({"loss": "mse"}, ["loss.delta=2", "data.split=[0.5, 0.25, 0.25]"]) == {
        "loss": {"type": "mse", "delta": 2}, "data": {"split": [0.5, 0.25, 0.25]}}  # ...and reach in there


def test_the_params_command_reads_floats_too(capsys):
    assert main(["zoo", "show", "mlp", "--set", "hidden=[8]", "--set", "dropout=5e-1"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert any(layer.get("rate") == 0.5 for layer in spec["layers"])


@pytest.mark.parametrize("item, message", [
    ("epochs", "--set takes KEY=VALUE"),
    ("=3", "--set takes KEY=VALUE"),
    ("x=[1,", "is not valid YAML"),
    ("x=&a [1, *a]", "uses a YAML alias"),
    ("x=" + "[" * 40 + "]" * 40, "deeper than 32 levels"),
    ("x=" + "9" * MAX_OVERRIDE_CHARS, "characters long; the limit is"),
])
def test_bad_items_are_refused_with_the_callers_error(item, message):
    with pytest.raises(ConfigError, match=message):
        split_override(item)
    with pytest.raises(SpecError, match=message):
        params_overrides([item])


def test_a_mapping_cannot_be_reached_through_a_number():
    with pytest.raises(ConfigError, match="'epochs' is not a mapping"):
        apply_overrides({"epochs": 3}, ["epochs.x=1"])


def test_a_billion_laughs_document_is_refused_before_it_expands():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml("\n".join(lines), what="bomb.yaml")
    assert parse_value("1e3") == 1000.0

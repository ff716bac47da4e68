"""The one ``--set KEY=VALUE`` parser: the same value means the same thing in every command, and reads are bounded."""
from __future__ import annotations

import json
import sys

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


def _laughs(levels: int, width: int = 9, indent: str = "") -> list[str]:
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"{indent}l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return lines


# The command, reporting its own peak resident memory (VmHWM: reset by exec, unlike ru_maxrss, which a child
# started from a large pytest process inherits).
_PEAK_REPORTING_CLI = """
import atexit, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("PEAK_KB " + line.split()[1])
atexit.register(peak)
sys.argv = ["modelkeep", *sys.argv[1:]]
runpy.run_module("modelkeep", run_name="__main__", alter_sys=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("where", ["config", "spec file"])
def test_billion_laughs_through_modelkeep_train_is_refused_fast_and_small(tmp_path, where):
    """Issue 10 #13: a 445-byte config took 13.5 s and 1.1 GB, 549 bytes ran past a minute. Run as the reviewers
    did — the command in a process of its own — with its time and peak memory measured."""
    import subprocess
    import time

    if where == "config":
        text = "model: {}\ndata: iris\nextra:\n" + "\n".join(_laughs(9, indent="  ")) + "\n"
        (tmp_path / "bomb.yaml").write_text(text)
        assert len(text) < 600
    else:
        spec = ("layers:\n  - {kind: Input, shape: [4]}\n  - kind: Dense\n    units: 3\n    junk:\n"
                + "\n".join(_laughs(9, indent="      ")) + "\n    activation: *l8\n")
        (tmp_path / "spec.yaml").write_text(spec)
        (tmp_path / "bomb.yaml").write_text("model: spec.yaml\ndata: iris\nepochs: 1\ncheckpoint: false\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_REPORTING_CLI, "train", str(tmp_path / "bomb.yaml"),
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    elapsed = time.perf_counter() - started
    error, _, peak = done.stderr.rpartition("PEAK_KB ")
    peak_mib = int(peak) / 1024
    assert done.returncode == 2, done.stderr
    assert "expands to more than 100,000 values" in error and error.count("\n") == 1
    assert elapsed < 60 and peak_mib < 800, (elapsed, peak_mib)  # the CLI's own imports included (torch)


def test_values_quoted_in_errors_are_shortened(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("model: {}\ndata: iris\nepochs: [" + ", ".join(["12345"] * 50_000) + "]\n")
    with pytest.raises(ConfigError, match=r"epochs must be a positive integer, got \[12345, ") as caught:
        load_config(path)
    assert len(str(caught.value)) < 200

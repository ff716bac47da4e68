"""Text from a file never reaches the terminal as escape codes or rich markup (issue 10, item 17).

A file's labels and card fields hold a window-title change, a cursor-up-and-erase that would
forge an "integrity OK" line, an OSC 52 clipboard write, a C1 control sequence, a bidirectional
override and rich markup. ``inspect`` and ``predict`` print them escaped, in human and in JSON
output, and the JSON stays valid with the escapes inside its strings.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from modelkeep.cli._output import json_text, printable, printable_document

TITLE = "\x1b]0;owned\x07cat"
FORGE = "\x1b[1A\x1b[2Kintegrity    OK: forged"
CLIPBOARD = "\x1b]52;c;ZWNobyBvd25lZA==\x07dog"
MARKUP = "[red]x[/red]"
LINK = "[link=https://evil.example]click[/link]"
C1 = "\x9b2Jbird"
LABELS = [TITLE, MARKUP, CLIPBOARD, C1]
CARD = {"description": FORGE, "license": LINK, "notes": "fine\nintegrity    OK: forged line\u202eevil\x7f"}
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]")


def modelkeep(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("modelkeep") or sys.executable
    prefix = [exe] if exe != sys.executable else [sys.executable, "-m", "modelkeep"]
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory):
    from modelkeep.artifact import save
    from modelkeep.nn import build

    folder = tmp_path_factory.mktemp("hostile")
    spec = {"name": "hostile", "layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 4}]}
    path = save(build(spec, seed=0), folder / "hostile.safetensors", labels=LABELS, card=CARD,
                task="classification")
    samples = folder / "x.npy"
    np.save(samples, np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))
    return path, samples


def wide(*args: str):
    """The command, with a wide terminal so that table cells are not wrapped."""
    return modelkeep(*args, env={"COLUMNS": "300"})


def assert_no_raw_controls(text: str) -> None:
    assert not RAW_CONTROLS.search(text), repr(RAW_CONTROLS.search(text))


def test_printable_escapes_every_control_character():
    assert printable("a\x1b[2Jb\x07c\x9bd\x7fe\u202ef\x00") == "a\\x1b[2Jb\\x07c\\x9bd\\x7fe\\u202ef\\x00"
    assert printable("one\ntwo\tthree") == "one\\ntwo\\tthree"
    assert printable("one\ntwo\tthree", keep_newlines=True) == "one\ntwo\tthree"
    assert printable("café 猫 [red]") == "café 猫 [red]"  # ordinary text, markup included, is left alone
    assert printable_document({"k\x1b": ["v\n", 1.5, None]}) == {"k\\x1b": ["v\\n", 1.5, None]}


def test_json_text_is_strict_json_with_escapes():
    text = json_text({"label": "\x1b]0;x\x07\x7f\x9b", "p": float("nan"), "q": [float("inf"), np.float32(0.5)],
                      "r": np.float64("-inf"), "s": np.arange(2)})
    assert_no_raw_controls(text)
    assert "\\u001b" in text and "\\u007f" in text and "\\u009b" in text
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert document == {"label": "\x1b]0;x\x07\x7f\x9b", "p": None, "q": [None, 0.5], "r": None, "s": [0, 1]}


def test_inspect_prints_hostile_labels_and_card_literally(hostile_model):
    path, _ = hostile_model
    result = wide("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert_no_raw_controls(result.stdout + result.stderr)
    assert MARKUP in result.stdout and LINK in result.stdout  # markup printed as written, not interpreted
    assert "\\x1b]0;owned\\x07cat" in result.stdout and "\\x1b[1A\\x1b[2Kintegrity" in result.stdout
    assert "\\x9b2Jbird" in result.stdout and "\\x1b]52;c;" in result.stdout
    # a newline in a card field cannot start a line of its own
    assert not any(line.startswith("integrity    OK: forged") for line in result.stdout.splitlines())
    assert "fine\\nintegrity    OK: forged line\\u202eevil\\x7f" in result.stdout


def test_inspect_json_keeps_hostile_text_as_json_escapes(hostile_model):
    path, _ = hostile_model
    result = modelkeep("inspect", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert_no_raw_controls(result.stdout)
    assert "\\u001b]0;owned\\u0007cat" in result.stdout
    info = json.loads(result.stdout)
    assert info["labels"] == LABELS and info["card"] == CARD


def test_predict_prints_hostile_labels_literally(hostile_model):
    path, samples = hostile_model
    result = wide("predict", str(path), str(samples), "--top", "4")
    assert result.returncode == 0, result.stderr
    assert_no_raw_controls(result.stdout + result.stderr)
    assert MARKUP in result.stdout and "\\x1b]52;c;ZWNobyBvd25lZA==\\x07dog" in result.stdout
    assert "\\x9b2Jbird" in result.stdout


def test_predict_json_keeps_hostile_labels_as_json_escapes(hostile_model):
    path, samples = hostile_model
    result = modelkeep("predict", str(path), str(samples), "--json")
    assert result.returncode == 0, result.stderr
    assert_no_raw_controls(result.stdout)
    records = json.loads(result.stdout)
    assert len(records) == 6 and {r["label"] for r in records} <= set(LABELS)


def test_diff_prints_hostile_metadata_literally(hostile_model, tmp_path):
    from modelkeep.artifact import save
    from modelkeep.nn import build

    path, _ = hostile_model
    spec = {"name": "hostile", "layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 4}]}
    other = save(build(spec, seed=1), tmp_path / "other.safetensors", labels=[MARKUP, TITLE, C1, CLIPBOARD],
                 card={"description": "x\nintegrity    OK: forged\x1b[2J"}, task="classification")
    result = wide("diff", str(path), str(other))
    assert result.returncode == 0, result.stderr
    assert_no_raw_controls(result.stdout + result.stderr)
    assert not any(line.startswith("integrity    OK: forged") for line in result.stdout.splitlines())
    assert json.loads(modelkeep("diff", str(path), str(other), "--json").stdout)

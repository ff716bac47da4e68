"""Hostile input: every file of tests/fixtures/hostile/ gets its typed error, fast, in bounded memory, running no code."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import modelkeep.errors as errors
from modelkeep.artifact import load
from modelkeep.artifact.json_form import import_json
from modelkeep.cli.main import main

HOSTILE = Path(__file__).resolve().parents[1] / "fixtures" / "hostile"
EXPECTED = json.loads((HOSTILE / "EXPECTED.json").read_text())
MODEL_CASES = sorted(name for name, e in EXPECTED.items() if "load" in e)
JSON_CASES = sorted(name for name, e in EXPECTED.items() if "import" in e)
TIME_LIMIT_S = 1.0
MEMORY_LIMIT_BYTES = 16 * 1024 * 1024


def run_cli(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(args))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so that a payload that did run would leave a PWNED_* file we can see."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not list(tmp_path.glob("PWNED*")), "a hostile file ran code"


def test_corpus_is_complete_and_small():
    files = {p.name for p in HOSTILE.iterdir()} - {"EXPECTED.json"}
    assert files == set(EXPECTED)
    assert len(MODEL_CASES) >= 60
    assert max(p.stat().st_size for p in HOSTILE.iterdir()) < 64 * 1024


@pytest.mark.parametrize("name", MODEL_CASES)
def test_load_raises_the_typed_error_fast_and_in_bounded_memory(name):
    expected = getattr(errors, EXPECTED[name]["load"])
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(expected) as caught:
            load(HOSTILE / name)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(caught.value, errors.ModelkeepError)
    assert elapsed < TIME_LIMIT_S, f"{name}: {elapsed:.2f}s"
    assert peak < MEMORY_LIMIT_BYTES, f"{name}: {peak:,} bytes"
    assert str(caught.value)  # a message, not a bare class


@pytest.mark.parametrize("name", MODEL_CASES)
def test_inspect_exits_with_the_expected_status(name):
    assert run_cli("inspect", str(HOSTILE / name)) == EXPECTED[name]["inspect"]
    assert run_cli("inspect", str(HOSTILE / name), "--json") == EXPECTED[name]["inspect"]


@pytest.mark.parametrize("name", MODEL_CASES)
def test_inspect_verify_refuses_every_file_that_load_refuses_for_its_bytes(name):
    status = run_cli("inspect", str(HOSTILE / name), "--verify")
    if EXPECTED[name]["load"] in ("IntegrityError", "UnsupportedVersionError"):
        assert status == 2


@pytest.mark.parametrize("name", JSON_CASES)
def test_hostile_json_forms_are_refused(name, in_tmp):
    start = time.perf_counter()
    with pytest.raises(errors.FormatError):
        import_json(HOSTILE / name, in_tmp / "out.safetensors")
    assert time.perf_counter() - start < TIME_LIMIT_S
    assert not (in_tmp / "out.safetensors").exists()
    assert run_cli("convert", str(HOSTILE / name), str(in_tmp / "out.safetensors")) == 2


def test_predict_cli_refuses_hostile_files_with_status_2(in_tmp):
    import numpy as np

    np.save(in_tmp / "x.npy", np.zeros((1, 4), dtype=np.float32))
    for name in ("pickle_exec.safetensors", "user_class_os_system.safetensors", "zip_bomb.safetensors"):
        assert run_cli("predict", str(HOSTILE / name), str(in_tmp / "x.npy")) == 2


def test_trust_code_still_refuses_a_class_that_is_not_a_module(monkeypatch):
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    with pytest.raises(errors.TrustError, match="not a torch.nn.Module subclass"):
        load(HOSTILE / "user_class_os_system.safetensors", trust_code=True)
    assert not called


def test_user_class_refusal_names_the_class_and_the_way_out():
    with pytest.raises(errors.TrustError) as caught:
        load(HOSTILE / "user_class_os_system.safetensors")
    message = str(caught.value)
    assert "os:system" in message and "trust_code=True" in message and "model_class=" in message


def test_cli_subprocess_exit_status_no_torch_and_bounded_rss():
    """The real console path: status 2 for every file `inspect` refuses, torch never imported, modest memory."""
    script = f"""
import contextlib, io, json, resource, sys
from pathlib import Path
from modelkeep.cli.main import main
hostile = Path({str(HOSTILE)!r})
expected = json.loads((hostile / "EXPECTED.json").read_text())
def peak():  # this program's own high-water mark (ru_maxrss carries the parent's across fork + exec)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
before = peak()
bad = []
for name, e in sorted(expected.items()):
    if "inspect" not in e:
        continue
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = main(["inspect", str(hostile / name), "--json"])
    if status != e["inspect"]:
        bad.append((name, status))
grown_kib = peak() - before
print(json.dumps({{"bad": bad, "torch": "torch" in sys.modules, "grown_kib": grown_kib}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["bad"] == []
    assert report["torch"] is False
    assert report["grown_kib"] < 64 * 1024


def test_console_script_exits_2_on_a_renamed_pickle():
    exe = Path(sys.executable).with_name("modelkeep")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "modelkeep"]
    result = subprocess.run([*command, "inspect", str(HOSTILE / "pickle_exec.safetensors")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "pickle" in result.stderr and "Traceback" not in result.stderr

"""A short fuzz run for CI: hypothesis drives the mutator of scripts/fuzz_model_file.py (the long run is that script)."""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_model_file.py"
_spec = importlib.util.spec_from_file_location("fuzz_model_file", SCRIPT)
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def seeds():
    return fuzz.seeds()


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 1), rounds=st.integers(1, 3))
def test_mutated_files_load_or_raise_typed_errors(seeds, tmp_path, seed, which, rounds):
    rng = random.Random(seed)
    raw = seeds[which]
    for _ in range(rounds):
        raw = fuzz.mutate(raw, rng)
    path = tmp_path / "case.safetensors"
    path.write_bytes(raw)
    fuzz.check(path)  # raises on anything but success or a ModelkeepError


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes(tmp_path, data):
    path = tmp_path / "bytes.safetensors"
    path.write_bytes(data)
    fuzz.check(path)


def test_the_fuzzer_runs_and_reports(tmp_path):
    report = fuzz.run(cases=30, seconds=None, seed=7, slow=5.0, out=tmp_path / "failures")
    assert report["cases"] == 30 and report["failures"] == []
    assert sum(report["load_outcomes"].values()) == 30

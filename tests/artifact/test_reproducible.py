"""``save(..., reproducible=True)``: the same content gives the same bytes, in another process at another time;
the default save keeps its clock and host record."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelkeep import load, save
from modelkeep.nn import build
from modelkeep.spec import load_spec

SPEC = {"layers": [{"kind": "Input", "name": "features", "shape": [4]},
                   {"kind": "Dense", "units": 8, "activation": "relu"},
                   {"kind": "Dense", "name": "head", "units": 3}]}

_SAVE_SCRIPT = """
import sys
from modelkeep import save
from modelkeep.nn import build
from modelkeep.spec import load_spec
spec = load_spec({spec!r})
save(build(spec, seed=7), sys.argv[1], labels=["a", "b", "c"], metrics={{"accuracy": 0.9}},
     card={{"license": "mit"}}, reproducible=True)
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save_in_a_process(path: Path, env_extra: dict[str, str] | None = None) -> None:
    import os

    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    env.update(env_extra or {})
    subprocess.run([sys.executable, "-c", _SAVE_SCRIPT.format(spec=SPEC), str(path)], check=True, env=env,
                   timeout=120)


def test_two_processes_at_different_times_write_identical_bytes(tmp_path):
    _save_in_a_process(tmp_path / "a.safetensors")
    time.sleep(1.1)  # the clock's seconds move on: nothing in the file may follow them
    _save_in_a_process(tmp_path / "b.safetensors")
    assert _sha(tmp_path / "a.safetensors") == _sha(tmp_path / "b.safetensors")
    provenance = load(tmp_path / "a.safetensors").manifest.provenance
    assert provenance["reproducible"] is True and provenance["created"] == "1970-01-01T00:00:00+00:00"
    assert not {"platform", "python_version", "torch_version", "git_commit"} & set(provenance)


def test_source_date_epoch_sets_the_recorded_time(tmp_path):
    _save_in_a_process(tmp_path / "a.safetensors", {"SOURCE_DATE_EPOCH": "1700000000"})
    provenance = load(tmp_path / "a.safetensors").manifest.provenance
    assert provenance["created"] == "2023-11-14T22:13:20+00:00"


def test_a_reproducible_resave_of_a_loaded_model_is_no_change(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = save(build(load_spec(SPEC), seed=1), tmp_path / "a.safetensors", reproducible=True)
    second = save(load(first), tmp_path / "b.safetensors", reproducible=True)
    assert _sha(first) == _sha(second)


def test_the_default_save_keeps_its_timestamp_and_host(tmp_path):
    path = save(build(load_spec(SPEC), seed=1), tmp_path / "a.safetensors")
    provenance = load(path).manifest.provenance
    assert "reproducible" not in provenance and provenance["created"] != "1970-01-01T00:00:00+00:00"
    assert {"platform", "python_version"} <= set(provenance)


@pytest.mark.parametrize("bad", ["", "soon", "-5"])
def test_an_unusable_source_date_epoch_falls_back_to_the_epoch(bad, monkeypatch):
    from modelkeep.artifact.manifest_builder import reproducible_timestamp

    monkeypatch.setenv("SOURCE_DATE_EPOCH", bad)
    assert reproducible_timestamp() == "1970-01-01T00:00:00+00:00"


def test_a_reproducible_save_leaves_out_the_seconds_per_epoch(tmp_path):
    history = {"epoch": [1, 2], "loss": [0.9, 0.5], "time": [1.25, 1.5]}
    module = build(load_spec(SPEC), seed=1)
    path = save(module, tmp_path / "a.safetensors", history=history, reproducible=True)
    assert load(path).manifest.history == {"epoch": [1, 2], "loss": [0.9, 0.5]}
    kept = save(module, tmp_path / "b.safetensors", history=history)
    assert load(kept).manifest.history["time"] == [1.25, 1.5]

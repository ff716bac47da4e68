"""`modelkeep inspect FILE --json`, as a whole process, imports only what it needs (it must stay fast).

Asserted on the set of modules the process imports (``python -X importtime``), not on a timing: neither torch
nor NumPy ever, and not pydantic either. The manifest is validated in plain Python; a spec architecture is
validated by the spec layer, whose layer fields take pydantic's slow path (``modelkeep.spec._pydantic_fields``)
only for a value it must coerce or refuse, never for a file modelkeep wrote.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "format_v1"


HOSTILE = Path(__file__).resolve().parents[1] / "fixtures" / "hostile"


def run_inspect(path: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """The finished ``inspect --json`` process and every module it imported (top-level packages included)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "modelkeep", "inspect", str(path), "--json"],
                            capture_output=True, text=True, timeout=120)
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "modelkeep.artifact.inspection" in names  # the parse worked
    return result, {name.split(".")[0] for name in names} | names


def imported_by_inspect(path: Path) -> set[str]:
    result, names = run_inspect(path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["path"] == str(path)
    return names


@pytest.mark.parametrize("name", ["digits_mlp", "iris_mlp", "user_class_tinynet"])
def test_inspect_never_imports_torch_or_numpy(name):
    imported = imported_by_inspect(V1 / f"{name}.safetensors")
    assert not imported & {"torch", "numpy", "safetensors", "rich", "yaml", "sklearn"}, sorted(imported)
    assert "modelkeep.artifact.manifest_builder" not in imported and "modelkeep.processing" not in imported


def test_inspect_of_a_class_architecture_imports_no_pydantic_and_no_spec_layer():
    imported = imported_by_inspect(V1 / "user_class_tinynet.safetensors")
    assert "pydantic" not in imported and "modelkeep.spec" not in imported, sorted(imported)


@pytest.mark.parametrize("name", ["digits_mlp", "iris_mlp"])
def test_inspect_of_a_spec_architecture_validates_it_without_pydantic(name):
    imported = imported_by_inspect(V1 / f"{name}.safetensors")
    assert {"modelkeep.spec.model", "modelkeep.spec.fields", "modelkeep.spec.params"} <= imported  # validated, counted
    assert "pydantic" not in imported and "pydantic_core" not in imported, sorted(imported)
    assert "modelkeep.spec._pydantic_fields" not in imported


@pytest.mark.parametrize(("name", "message"), [
    ("layer_units_negative", "layer 1 'hidden' (Dense): field 'units': Input should be greater than 0 (got -8)"),
    ("layer_field_wrong_type", "layer 1 'hidden' (Dense): field 'units': Input should be a valid integer, "
                               "unable to parse string as an integer (got 'eight')"),
])
def test_a_layer_field_to_refuse_is_refused_by_pydantic_with_its_message(name, message):
    result, imported = run_inspect(HOSTILE / f"{name}.safetensors")
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "modelkeep.spec._pydantic_fields" in imported and "pydantic" in imported
    assert not imported & {"torch", "numpy"}

"""`modelkeep diff`, `modelkeep convert` (the JSON form) and a torch-free `inspect`, on real models."""
from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys

import pytest
import torch

from modelkeep.artifact import load, read_tensors, save
from modelkeep.artifact import json_form
from modelkeep.artifact.diff import diff_files
from modelkeep.artifact.json_form import export_json, import_json
from modelkeep.cli.main import main
from modelkeep.errors import FormatError
from modelkeep.nn import build

MLP = {"name": "mlp", "layers": [{"kind": "Input", "name": "x", "shape": [4]},
                                 {"kind": "Dense", "name": "hidden", "units": 8, "activation": "relu"},
                                 {"kind": "Dense", "name": "out", "units": 3}]}


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main(list(args))
    return status, out.getvalue()


def test_diff_of_a_fine_tuned_copy(saved, tmp_path):
    model = load(saved)
    module = model.module
    with torch.no_grad():
        module.layers["logits"].weight[0].add_(0.5)
    child = save(model, tmp_path / "child.safetensors", parent=saved, card={"license": "MIT"})
    report = diff_files(saved, child)
    assert [d["name"] for d in report["different"]] == ["layers.logits.weight"]
    change = report["different"][0]
    assert change["max_abs_diff"] == pytest.approx(0.5)
    assert change["changed_fraction"] == pytest.approx(64 / 640)
    assert "layers.conv1.0.weight" in report["equal"] and not report["only_in_a"]
    paths = {c["path"] for c in report["metadata_changes"]}
    assert {"manifest.card", "manifest.lineage"} <= paths
    status, text = cli("diff", str(saved), str(child), "--json")
    assert status == 0 and json.loads(text)["different"][0]["name"] == "layers.logits.weight"
    status, text = cli("diff", str(saved), str(child))
    assert status == 0 and "layers.logits.weight" in text and "1 different" in text


def test_diff_of_identical_and_of_different_architectures(saved, tmp_path):
    report = diff_files(saved, saved, verify=True)
    assert report["identical_tensors"] and not report["metadata_changes"]
    other = save(build(MLP, seed=0), tmp_path / "mlp.safetensors")
    report = diff_files(saved, other)
    assert report["only_in_a"] and report["only_in_b"] and not report["equal"]
    assert any(c["path"].startswith("manifest.architecture") for c in report["metadata_changes"])


def test_json_round_trip_is_byte_identical(saved, tmp_path):
    status, _ = cli("convert", str(saved), str(tmp_path / "model.json"))
    assert status == 0
    document = json.loads((tmp_path / "model.json").read_text())
    assert [layer["name"] for layer in document["layers"]] == [
        "layers.conv1.0", "layers.conv2.0", "layers.hidden.0", "layers.logits"]
    weight = document["layers"][-1]["tensors"]["weight"]
    assert weight["shape"] == [10, 64] and len(weight["values"]) == 10 and len(weight["values"][0]) == 64
    status, _ = cli("convert", str(tmp_path / "model.json"), str(tmp_path / "back.safetensors"))
    assert status == 0
    assert (tmp_path / "back.safetensors").read_bytes() == saved.read_bytes()


def test_json_round_trip_of_special_values_and_dtypes(tmp_path):
    from modelkeep.artifact.tensors import write_tensors

    tensors = {
        "f32": torch.tensor([1.0, math.nan, math.inf, -math.inf, -0.0, 1e-45], dtype=torch.float32),
        "bf16": torch.tensor([[0.1, 3.0], [-2.5, 1e20]], dtype=torch.bfloat16),
        "f16": torch.tensor([65504.0, 6e-8], dtype=torch.float16),
        "i64": torch.tensor([2**62, -(2**63)], dtype=torch.int64),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
    }
    source = write_tensors(tmp_path / "t.safetensors", tensors)
    export_json(source, tmp_path / "t.json")
    import_json(tmp_path / "t.json", tmp_path / "back.safetensors")
    back = read_tensors(tmp_path / "back.safetensors")
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        as_bytes = lambda t: t.reshape(-1).view(torch.uint8)  # bit-exact: NaN, -0.0 and all  # noqa: E731
        assert torch.equal(as_bytes(back[name]), as_bytes(tensor)), name
    json.loads((tmp_path / "t.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))


def test_large_models_are_refused_unless_forced(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(json_form, "MAX_JSON_VALUES", 1000)
    with pytest.raises(FormatError, match=r"35,914 values .*--force"):
        export_json(saved, tmp_path / "big.json")
    assert cli("convert", str(saved), str(tmp_path / "big.json"))[0] == 2
    assert not (tmp_path / "big.json").exists()
    assert cli("convert", str(saved), str(tmp_path / "big.json"), "--force")[0] == 0
    with pytest.raises(FormatError, match="--force"):
        import_json(tmp_path / "big.json", tmp_path / "back.safetensors")
    import_json(tmp_path / "big.json", tmp_path / "back.safetensors", force=True)


def test_convert_needs_one_json_side(saved, tmp_path):
    assert cli("convert", str(saved), str(tmp_path / "x.safetensors"))[0] == 2


def test_inspect_never_imports_torch_and_shows_everything(saved):
    script = (
        "import sys, io, contextlib, json\n"
        "from modelkeep.cli.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    assert main(['inspect', {str(saved)!r}, '--json', '--verify']) == 0\n"
        "    assert main(['inspect', " + repr(str(saved)) + "]) == 0\n"
        "assert 'torch' not in sys.modules, 'inspect imported torch'\n"
        "print(out.getvalue())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    info = json.loads(text[:text.index("\n}\n") + 2])
    assert info["integrity"]["verified"] and info["integrity"]["tensors"] == 8
    assert info["architecture"]["type"] == "spec" and info["total_parameters"] == 35914
    assert info["signature"]["inputs"][0]["shape"] == [None, 1, 8, 8]
    assert info["content_hash"].startswith("xxh3-128:")
    for word in ("content hash", "input", "provenance", "integrity"):
        assert word in text


def test_names_from_the_file_are_never_console_markup(tmp_path):
    spec = {"name": "[/]", "layers": [{"kind": "Input", "name": "x", "shape": [2]},
                                      {"kind": "Dense", "name": "out", "units": 2}]}
    path = save(build(spec), tmp_path / "markup.safetensors", labels=["[/]", "[bold]x"], card={"license": "[/link]"})
    status, text = cli("inspect", str(path))
    assert status == 0 and "[/]" in text and "[bold]x" in text
    assert cli("diff", str(path), str(path))[0] == 0

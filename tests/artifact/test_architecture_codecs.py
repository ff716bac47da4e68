"""Architecture codecs in one registry, and the one manifest builder that save, export and importers share."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import modelkeep as mk
from modelkeep.artifact import load, save
from modelkeep.artifact.architecture import Description, Rebuilt, weight_rows
from modelkeep.artifact.codecs import ARCHITECTURES, codec_for
from modelkeep.artifact.format import KEY_MANIFEST, read_header
from modelkeep.artifact.inspection import describe
from modelkeep.artifact.manifest_builder import build_manifest, manifest_metadata
from modelkeep.artifact.tensors import write_tensors
from modelkeep.cli.main import main
from modelkeep.errors import ConfigError, FormatError, TrustError

HOSTILE = Path(__file__).resolve().parents[1] / "fixtures" / "hostile"
MLP = {"name": "mlp", "layers": [{"kind": "Input", "name": "x", "shape": [4]},
                                 {"kind": "Dense", "name": "out", "units": 3}]}


class LinearCodec:
    """What an importer adds: a codec for a kind of document that load and inspect then understand unchanged."""

    kind = "linear"

    def encode(self, model, *, spec=None, init=None):
        return {"type": "linear", "in": model.in_features, "out": model.out_features}

    def decode(self, document, *, where, trust_code=False, model_class=None):
        with torch.device("meta"):
            module = torch.nn.Linear(int(document["in"]), int(document["out"]))
        return Rebuilt(module, on_meta=True, output_units=int(document["out"]))

    def describe(self, document, header):
        rows = weight_rows(header)
        total = sum(row["parameters"] for row in rows)
        return Description({"type": "linear", "name": f"linear {document['in']}->{document['out']}"}, rows, total,
                           total)


@pytest.fixture()
def linear_codec(monkeypatch):
    codec = LinearCodec()
    monkeypatch.setitem(ARCHITECTURES._items, "linear", codec)
    monkeypatch.setitem(ARCHITECTURES._canonical, "linear", "linear")
    return codec


def test_the_built_in_codecs_are_registered():
    assert ARCHITECTURES.names() == ["class", "ensemble", "spec"]
    assert codec_for("spec").kind == "spec" and codec_for("class").kind == "class"


@pytest.mark.parametrize("kind", ["onnx", "SPEC", None, {"type": "spec"}])
def test_an_unknown_type_is_a_format_error_naming_the_known_ones(kind):
    with pytest.raises(FormatError, match=r"not known to this modelkeep \(known: 'class', 'ensemble', 'spec'\)"):
        codec_for(kind, "x.safetensors")


def test_the_hostile_unknown_type_gets_the_same_typed_error_from_load_inspect_and_save():
    with pytest.raises(FormatError, match="'onnx' is not known"):
        load(HOSTILE / "architecture_unknown_type.safetensors")
    with pytest.raises(FormatError, match="'onnx' is not known"):
        describe(HOSTILE / "architecture_unknown_type.safetensors")
    with pytest.raises(FormatError, match="'onnx' is not known"):
        build_manifest({"type": "onnx", "graph": "..."})


def test_a_registered_codec_plugs_into_builder_load_predict_and_inspect(linear_codec, tmp_path):
    module = torch.nn.Linear(4, 3)
    manifest = build_manifest(linear_codec.encode(module), labels=["a", "b", "c"], where="test")
    assert manifest.postprocessing == {"type": "softmax", "input": "logits"}  # three outputs, from the codec
    path = write_tensors(tmp_path / "linear.safetensors", dict(module.state_dict()), manifest_metadata(manifest))
    loaded = load(path)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).argmax(1).tolist()
    assert loaded.predict(x).labels == [["a", "b", "c"][i] for i in expected]
    info = describe(path)
    assert info["architecture"]["type"] == "linear" and info["total_parameters"] == 15
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["inspect", str(path)]) == 0
    assert "linear 4->3" in out.getvalue()


def test_class_codec_honours_trust_code_and_model_class():
    document = {"type": "class", "class": "torch.nn:Linear", "init": {"in_features": 2, "out_features": 1}}
    with pytest.raises(TrustError, match="trust_code=True"):
        codec_for("class").decode(document, where="f")
    rebuilt = codec_for("class").decode(document, where="f", trust_code=True)
    assert isinstance(rebuilt.module, torch.nn.Linear) and rebuilt.on_meta
    rebuilt = codec_for("class").decode(document, where="f", model_class=torch.nn.Linear)
    assert rebuilt.module.out_features == 1 and rebuilt.rebuild().weight.device.type == "cpu"


def test_spec_codec_describes_without_torch_and_decodes_on_meta(tmp_path):
    path = save(mk.build(MLP, seed=0), tmp_path / "m.safetensors")
    document = json.loads(read_header(path).metadata[KEY_MANIFEST])["architecture"]
    rebuilt = codec_for("spec").decode(document, where=path)
    assert rebuilt.on_meta and rebuilt.output_units == 3 and rebuilt.signature["inputs"][0]["shape"] == [None, 4]
    description = codec_for("spec").describe(document, read_header(path))
    assert description.total == 15 and description.summary["name"] == "mlp"


# -- the one builder --------------------------------------------------------------------------------------------
def test_save_and_export_checkpoint_build_the_same_manifest(tmp_path):
    from modelkeep.checkpoint import CheckpointManager, CheckpointState, EveryNEpochs, Position, export_checkpoint
    from modelkeep.checkpoint import manifest_pieces

    model = mk.build(MLP, seed=0)
    hyperparameters = {"loss": "categorical_crossentropy", "lr": 0.1}
    pieces = manifest_pieces(model, labels=["a", "b", "c"], hyperparameters=hyperparameters, card={"license": "MIT"})
    assert pieces["postprocessing"] == {"type": "softmax", "input": "logits"}
    assert "provenance" not in pieces and "format_version" not in pieces
    manager = CheckpointManager(tmp_path / "run", save_on=EveryNEpochs(1))
    manager.save(CheckpointState(model, torch.optim.SGD(model.parameters(), lr=0.1)), Position(1, 0, 1),
                 metrics={"val_loss": 0.5}, history={"epoch": [1]}, extra_manifest=pieces)
    manager.close()
    exported = load(export_checkpoint(tmp_path / "run", tmp_path / "exported.safetensors")).manifest.to_dict()
    saved = load(save(model, tmp_path / "saved.safetensors", labels=["a", "b", "c"], hyperparameters=hyperparameters,
                      card={"license": "MIT"}, history={"epoch": [1]}, metrics={"val_loss": 0.5})).manifest.to_dict()
    for made_per_file in ("provenance", "lineage"):
        exported.pop(made_per_file), saved.pop(made_per_file, None)
    assert exported == saved


def test_the_builder_validates_before_anything_is_written():
    architecture = {"type": "spec", "spec": MLP}
    with pytest.raises(FormatError, match="'task'"):
        build_manifest(architecture, task="ranking", where="t")
    with pytest.raises(ConfigError, match="not JSON data"):
        build_manifest(architecture, hyperparameters={"callback": object()})
    manifest = build_manifest(architecture, task="regression", extra={"future_section": {"a": 1}})
    assert manifest.postprocessing == {"type": "identity"} and manifest.unknown == {"future_section": {"a": 1}}
    assert json.loads(manifest_metadata(manifest)[KEY_MANIFEST])["future_section"] == {"a": 1}


def test_load_and_predict_import_nothing_above_the_file_layer():
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, modelkeep\n"
        "m = modelkeep.load(sys.argv[1])\n"
        "m.predict(np.zeros((2, 4), dtype=np.float32))\n"
        "print(sorted(k for k in sys.modules if k.startswith(('modelkeep.train', 'modelkeep.checkpoint', "
        "'modelkeep.data', 'modelkeep.cli', 'modelkeep.quickstart'))))\n"
    )
    path = Path(__file__).resolve().parents[1] / "fixtures" / "format_v1" / "iris_mlp.safetensors"
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"

"""``modelkeep.import_model`` over the task matrix: state dicts saved as people save them, imported, and the
imported file predicts exactly what the original network does.

Sources: ``torch.save(state_dict)`` as .pt/.pth/.bin, ``safetensors.torch.save_file``, the names
``nn.DataParallel`` and ``torch.compile`` give, a Lightning-style checkpoint. Targets: a spec, a zoo
model, the user's own class. The provenance records the source and validates against the schema.
"""
from __future__ import annotations

import hashlib
import json

import jsonschema
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import modelkeep
from modelkeep import ImportReport, import_model, load
from modelkeep.artifact.manifest import manifest_schema
from modelkeep.errors import ConfigError, FormatError, TrustError
from modelkeep.nn import build

from pytorch_nets import TASKS, BinaryNet, MultiNet, answers, batch, dense_spec, expected_answers

SAVERS = {
    # how: (file name, wrap the state dict, write it)
    "pt": ("weights.pt", lambda m: m.state_dict(), torch.save),
    "pth_dataparallel": ("weights.pth", lambda m: torch.nn.DataParallel(m).state_dict(), torch.save),
    "bin_compiled": ("pytorch_model.bin", lambda m: torch.compile(m).state_dict(), torch.save),
    "safetensors": ("weights.safetensors", lambda m: m.state_dict(), lambda s, p: save_file(dict(s), p)),
    "lightning": ("epoch=3.ckpt", lambda m: lightning_checkpoint(m), torch.save),
    "legacy": ("old.pt", lambda m: m.state_dict(), lambda s, p: torch.save(s, p, _use_new_zipfile_serialization=False)),
}


def lightning_checkpoint(module: torch.nn.Module) -> dict:
    """What PyTorch Lightning's ModelCheckpoint saves for a LightningModule holding ``self.model``."""
    optimizer = torch.optim.Adam(module.parameters())
    return {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in module.state_dict().items()},
            "optimizer_states": [optimizer.state_dict()], "lr_schedulers": [], "hyper_parameters": {"lr": 1e-3}}


def _check_same_answers(task, original, out, **load_options):
    x = batch(task)
    original.eval()
    with torch.no_grad():
        logits = original(x)
    model = load(out, **load_options)
    with torch.no_grad():
        assert (model.module(x) - logits).abs().max().item() <= 1e-6
    assert np.abs(answers(model.predict(x.numpy())) - expected_answers(task, logits)).max() <= 1e-6
    return model


@pytest.mark.parametrize("how", list(SAVERS))
@pytest.mark.parametrize("task", list(TASKS))
def test_spec_models_import_from_every_way_of_saving(task, how, tmp_path):
    spec, _, _, task_kind = TASKS[task]
    name, state_of, write = SAVERS[how]
    original = build(spec, seed=1)
    write(state_of(original), tmp_path / name)
    report = import_model(tmp_path / name, tmp_path / "out.safetensors", spec=spec, task=task_kind, strict=True)
    assert isinstance(report, ImportReport) and report.complete and report.path == tmp_path / "out.safetensors"
    assert report.format == ("safetensors" if how == "safetensors" else "pytorch")
    assert report.stripped_prefix == {"pth_dataparallel": "module.", "bin_compiled": "_orig_mod.",
                                      "lightning": "model."}.get(how, "")
    _check_same_answers(task, original, tmp_path / "out.safetensors")


@pytest.mark.parametrize("task", list(TASKS))
def test_plain_classes_import_onto_the_same_class(task, tmp_path):
    spec, cls, init, task_kind = TASKS[task]
    torch.manual_seed(3)
    original = cls(**init)
    torch.save(original.state_dict(), tmp_path / "net.pt")
    report = import_model(tmp_path / "net.pt", tmp_path / "out.safetensors", model_class=cls, init=init,
                          task=task_kind, example_input=batch(task, 2), strict=True)
    assert report.complete and report.target.startswith("class ")
    _check_same_answers(task, original, tmp_path / "out.safetensors", model_class=cls)


def test_a_class_named_by_reference_needs_trust_code(tmp_path):
    torch.save(MultiNet().state_dict(), tmp_path / "net.pt")
    reference = f"{MultiNet.__module__}:MultiNet"
    with pytest.raises(TrustError, match="trust_code=True"):
        import_model(tmp_path / "net.pt", tmp_path / "out.safetensors", model_class=reference)
    assert not (tmp_path / "out.safetensors").exists()
    report = import_model(tmp_path / "net.pt", tmp_path / "out.safetensors", model_class=reference, trust_code=True)
    assert report.complete


def test_a_plain_state_dict_maps_onto_a_spec_with_an_explicit_mapping(tmp_path):
    torch.manual_seed(0)
    original = MultiNet()
    torch.save(original.state_dict(), tmp_path / "net.pt")
    out = tmp_path / "out.safetensors"
    with pytest.raises(FormatError, match="in the file but not in the model.*body.0.bias"):
        import_model(tmp_path / "net.pt", out, spec=dense_spec(4, 3))  # the names differ: nothing fits
    mapping = {"body.0": "layers.dense_1.0", "head": "layers.head"}
    report = import_model(tmp_path / "net.pt", out, spec=dense_spec(4, 3), mapping=mapping, strict=True,
                          labels=["a", "b", "c"])
    assert report.complete
    model = _check_same_answers("multiclass", original, out)
    assert model.manifest.labels == ["a", "b", "c"]
    assert model.manifest.provenance["source"]["mapping"] == mapping


def test_provenance_records_the_source_and_validates_against_the_schema(tmp_path):
    original = build(dense_spec(4, 3), seed=0)
    src = tmp_path / "weights.pt"
    torch.save({"model_state_dict": original.state_dict(), "epoch": 2}, src)
    report = import_model(src, tmp_path / "out.safetensors", spec=dense_spec(4, 3))
    model = load(tmp_path / "out.safetensors")
    source = model.manifest.provenance["source"]
    assert source["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() == report.sha256
    assert source["file"] == "weights.pt" and source["format"] == "pytorch" and source["size"] == src.stat().st_size
    assert source["reader"]["weights_under"] == "model_state_dict"
    assert any("model_state_dict" in note for note in report.notes)
    jsonschema.validate(model.manifest.to_dict(), manifest_schema())
    resaved = modelkeep.save(model, tmp_path / "again.safetensors")  # a re-save keeps where it came from
    assert load(resaved).manifest.provenance["source"]["sha256"] == report.sha256


def test_the_format_comes_from_the_content_not_the_extension(tmp_path):
    original = build(dense_spec(4, 1), seed=0)
    disguised = tmp_path / "weights.safetensors"
    torch.save(original.state_dict(), disguised)  # a torch zip named .safetensors
    assert import_model(disguised, tmp_path / "a.safetensors", spec=dense_spec(4, 1)).format == "pytorch"
    other = tmp_path / "weights.pt"
    save_file(original.state_dict(), other)  # a safetensors file named .pt
    assert import_model(other, tmp_path / "b.safetensors", spec=dense_spec(4, 1)).format == "safetensors"


def test_strict_refuses_and_writes_nothing(tmp_path):
    torch.save(build(dense_spec(4, 3), seed=0).state_dict(), tmp_path / "w.pt")
    out = tmp_path / "out.safetensors"
    with pytest.raises(FormatError, match="strict") as caught:
        import_model(tmp_path / "w.pt", out, spec=dense_spec(4, 5), strict=True)
    assert "shape mismatch layers.head.weight" in str(caught.value)
    assert not out.exists()
    report = import_model(tmp_path / "w.pt", out, spec=dense_spec(4, 5))  # not strict: a new head, reported
    assert [m[0] for m in report.mismatched] == ["layers.head.bias", "layers.head.weight"]
    assert report.missing == [] and out.exists()


def test_weights_that_fit_nothing_are_refused(tmp_path):
    torch.save({"x": torch.zeros(2)}, tmp_path / "w.pt")
    with pytest.raises(FormatError, match="no tensor"):
        import_model(tmp_path / "w.pt", tmp_path / "out.safetensors", spec=dense_spec(4, 3))
    assert not (tmp_path / "out.safetensors").exists()


def test_a_modelkeep_file_is_not_imported(tmp_path):
    saved = modelkeep.save(build(dense_spec(4, 3), seed=0), tmp_path / "m.safetensors")
    with pytest.raises(FormatError, match="already a modelkeep file; use modelkeep.load"):
        import_model(saved, tmp_path / "out.safetensors", spec=dense_spec(4, 3))


def test_weights_alone_need_a_target_and_only_one(tmp_path):
    torch.save(BinaryNet().state_dict(), tmp_path / "w.pt")
    with pytest.raises(ConfigError, match="spec=.*zoo=.*model_class="):
        import_model(tmp_path / "w.pt", tmp_path / "out.safetensors")
    with pytest.raises(ConfigError, match="not spec and zoo"):
        import_model(tmp_path / "w.pt", tmp_path / "out.safetensors", spec=dense_spec(4, 1), zoo="mlp")
    with pytest.raises(ConfigError, match="zoo model"):
        import_model(tmp_path / "w.pt", tmp_path / "out.safetensors", spec=dense_spec(4, 1), num_classes=3)


def test_a_zoo_model_with_overrides(tmp_path):
    original = build(modelkeep.get_spec("mlp", input_features=6, hidden=(8,), num_classes=4), seed=2)
    torch.save(torch.nn.DataParallel(original).state_dict(), tmp_path / "mlp.pt")
    report = import_model(tmp_path / "mlp.pt", tmp_path / "out.safetensors", zoo="mlp", input_features=6, hidden=(8,),
                          num_classes=4, strict=True)
    assert report.complete and report.target == "zoo mlp" and report.layout is None
    x = torch.randn(3, 6)
    with torch.no_grad():
        assert torch.allclose(load(tmp_path / "out.safetensors").module(x), original.eval()(x), atol=1e-6)


def test_report_json_is_plain_data(tmp_path):
    torch.save(build(dense_spec(4, 3), seed=0).state_dict(), tmp_path / "w.pt")
    report = import_model(tmp_path / "w.pt", tmp_path / "out.safetensors", spec=dense_spec(4, 5))
    document = json.loads(json.dumps(report.to_dict()))
    assert document["mismatched"][0] == {"name": "layers.head.bias", "file": [3], "model": [5]}
    assert "sha256" in str(report) and "wrote" in str(report)


def _torchvision_resnet18() -> dict:
    """Random weights under torchvision's published names and shapes for resnet18 (tests/importers/data)."""
    from pathlib import Path

    facts = json.loads((Path(__file__).parent / "data" / "torchvision_resnet18.json").read_text())["state_dict"]
    generator = torch.Generator().manual_seed(0)
    return {name: (torch.randn(shape, generator=generator) if shape else torch.tensor(0))
            for name, shape in facts.items()}


def test_a_zoo_model_finds_the_layout_its_weights_are_named_in(tmp_path):
    state = _torchvision_resnet18()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "resnet18.pth")  # saved from DataParallel
    out = tmp_path / "out.safetensors"
    report = import_model(tmp_path / "resnet18.pth", out, zoo="resnet18", strict=True)
    assert report.layout == "resnet18:torchvision" and report.stripped_prefix == "module." and report.complete
    model = load(out)
    weights = model.module.state_dict()
    assert torch.equal(weights["layers.conv1.weight"], state["conv1.weight"])
    assert torch.equal(weights["layers.fc.weight"], state["fc.weight"])
    assert model.manifest.provenance["source"]["layout"] == "resnet18:torchvision"
    with pytest.raises(FormatError, match="no tensor"):  # our own names do not fit torchvision's file
        import_model(tmp_path / "resnet18.pth", out, zoo="resnet18", layout="modelkeep", strict=True)

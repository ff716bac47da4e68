"""The written specification and its schema match what modelkeep writes and reads."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import jsonschema
import pytest
import torch
from safetensors import safe_open

from modelkeep.artifact import format as fmt
from modelkeep.artifact import load, save
from modelkeep.artifact.format import KEY_INTEGRITY, KEY_MANIFEST, KEY_VERSION, read_header
from modelkeep.artifact.manifest import Manifest, manifest_schema, read_manifest
from modelkeep.errors import FormatError, UnsupportedVersionError
from modelkeep.nn import build

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "format.md"
SCHEMA = ROOT / "docs" / "format.schema.json"
PACKAGED = ROOT / "modelkeep" / "artifact" / "manifest.schema.json"
COMPAT = Path(__file__).resolve().parents[1] / "fixtures" / "format_v1"
MLP = {"name": "mlp", "layers": [{"kind": "Input", "name": "x", "shape": [4]},
                                 {"kind": "Dense", "name": "out", "units": 3}]}


def validate_file(path: Path) -> dict:
    """What the spec promises of every file: plain safetensors, and metadata valid against the schema."""
    schema = manifest_schema()
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        for name in handle.keys():
            handle.get_tensor(name)
    manifest = json.loads(metadata[KEY_MANIFEST])
    jsonschema.validate(manifest, schema, format_checker=jsonschema.FormatChecker())
    defs = {"$defs": schema["$defs"]}
    jsonschema.validate(metadata, {**defs, "$ref": "#/$defs/header_metadata"})
    jsonschema.validate(json.loads(metadata[KEY_INTEGRITY]), {**defs, "$ref": "#/$defs/integrity"})
    return manifest


def test_the_packaged_schema_is_the_documented_one():
    assert PACKAGED.read_bytes() == SCHEMA.read_bytes()
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA.read_text()))


def test_schema_and_reader_know_the_same_sections():
    schema_sections = set(json.loads(SCHEMA.read_text())["properties"])
    assert schema_sections == set(Manifest.sections())


def test_the_document_states_the_limits_the_code_enforces():
    text = DOC.read_text()
    for value in (fmt.MAX_HEADER_BYTES, fmt.MAX_METADATA_VALUE_BYTES, fmt.MAX_DIMS, fmt.MAX_JSON_DEPTH):
        assert f"{value:,}".replace(",", "") in text.replace(",", "").replace("_", ""), value
    assert f"Format version {fmt.FORMAT_VERSION}" in text
    for word in ("MUST", "SHOULD", "MAY", KEY_MANIFEST, KEY_INTEGRITY, KEY_VERSION, "xxh3-128"):
        assert word in text


@pytest.mark.parametrize("path", sorted(COMPAT.glob("*.safetensors")), ids=lambda p: p.name)
def test_committed_files_validate(path):
    validate_file(path)


def test_every_section_a_writer_can_fill_validates(tmp_path):
    model = build(MLP, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    parent = save(model, tmp_path / "parent.safetensors")
    path = save(model, tmp_path / "full.safetensors", labels=["a", "b", "c"], history={"epoch": [1], "loss": [0.5]},
                metrics={"accuracy": 0.9}, hyperparameters={"lr": 0.1}, card={"license": "MIT", "intended_use": "tests",
                "training_data": "none", "limitations": "none", "metrics": {"accuracy": 0.9}},
                data_fingerprint="xxh3-128:abc", optimizer=optimizer, scheduler=scheduler, parent=parent)
    manifest = validate_file(path)
    assert set(manifest) >= {"architecture", "labels", "history", "metrics", "hyperparameters", "signature",
                             "provenance", "card", "lineage", "optimizer", "scheduler"}
    assert manifest["signature"]["inputs"][0]["shape"] == [None, 4]
    assert manifest["lineage"]["parent"]["content_hash"] == load(parent).content_hash


def _rewrite_manifest(path: Path, change) -> Path:
    """Edit the manifest and re-save through the writer (so hashes stay right), keeping the tensors."""
    from modelkeep.artifact.tensors import read_tensors, write_tensors

    header = read_header(path)
    metadata = {k: v for k, v in header.metadata.items() if k != KEY_INTEGRITY}
    manifest = json.loads(metadata[KEY_MANIFEST])
    change(manifest, metadata)
    metadata[KEY_MANIFEST] = json.dumps(manifest)
    tensors = {k: v.clone() for k, v in read_tensors(path).items()}
    out = path.with_name("edited.safetensors")
    return write_tensors(out, tensors, metadata)


def test_readers_ignore_unknown_sections_and_fields(tmp_path):
    path = save(build(MLP, seed=0), tmp_path / "m.safetensors")

    def add_future(manifest, metadata):
        manifest["future_section"] = {"anything": [1, 2, 3]}
        manifest["card"] = {"license": "MIT", "future_card_field": True}
        metadata["org.example.note"] = "kept"

    edited = _rewrite_manifest(path, add_future)
    model = load(edited)
    assert model.manifest.model_extra["future_section"] == {"anything": [1, 2, 3]}
    from modelkeep.artifact.inspection import describe

    assert describe(edited)["unknown_sections"] == ["future_section"]


def test_newer_versions_are_refused_with_advice(tmp_path):
    path = save(build(MLP, seed=0), tmp_path / "m.safetensors")

    def bump(manifest, metadata):
        manifest["format_version"] = 2
        metadata[KEY_VERSION] = "2"

    with pytest.raises(UnsupportedVersionError, match="Upgrade modelkeep"):
        read_manifest(_rewrite_manifest(path, bump))


def test_header_is_padded_so_tensor_data_is_8_byte_aligned(tmp_path):
    path = save(build(MLP, seed=0), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert (8 + length) % 8 == 0
    header = read_header(path)
    for entry in header.tensors.values():
        assert entry.begin % fmt.DTYPE_SIZES[entry.dtype] == 0


def test_metadata_value_size_and_depth_limits(tmp_path, monkeypatch):
    path = save(build(MLP, seed=0), tmp_path / "m.safetensors")
    monkeypatch.setattr(fmt, "MAX_METADATA_VALUE_BYTES", 100)
    with pytest.raises(FormatError, match="the limit is 100"):
        read_manifest(path)
    monkeypatch.undo()
    assert fmt.json_depth(json.loads("[" * 10 + "]" * 10)) == 10
    assert fmt.json_depth(json.loads("[" * 70 + "]" * 70)) > fmt.MAX_JSON_DEPTH
    with pytest.raises(FormatError, match="nested too deeply"):
        fmt.loads_bounded("[" * 70 + "]" * 70, "x")
    with pytest.raises(FormatError, match="nested too deeply"):
        fmt.loads_bounded("[" * 100_000 + "]" * 100_000, "x")
    with pytest.raises(FormatError, match="not acceptable JSON"):
        fmt.loads_bounded("[" + "1" * 5000 + "]", "x")


def test_content_hash_ignores_metadata_and_optimizer(tmp_path):
    model = build(MLP, seed=0)
    optimizer = torch.optim.Adam(model.parameters())
    a = load(save(model, tmp_path / "a.safetensors", card={"license": "MIT"}))
    b = load(save(model, tmp_path / "b.safetensors", optimizer=optimizer, labels=["x", "y", "z"]))
    assert a.content_hash == b.content_hash and re.fullmatch(r"xxh3-128:[0-9a-f]{32}", a.content_hash)
    with torch.no_grad():
        model.layers.out.weight[0, 0] += 1
    c = load(save(model, tmp_path / "c.safetensors"))
    assert c.content_hash != a.content_hash

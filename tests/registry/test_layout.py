"""The registry layout: files split into SHA-256 blobs and rebuilt byte-identically, every digest verified."""
from __future__ import annotations

import pytest
import torch

from modelkeep.errors import FormatError, IntegrityError
from modelkeep.io.blobstore import LocalBlobStore, blob_name
from modelkeep.registry import layout

from registry_files import backbone, fine_tune, head, write_model


def test_round_trip_is_byte_identical(tmp_path):
    tensors = {**backbone(0), "steps": torch.tensor([3], dtype=torch.int64), "mask": torch.tensor([True, False]),
               "half": torch.randn(5).to(torch.float16), "empty": torch.zeros(0)}
    original = write_model(tmp_path / "m.safetensors", tensors, metrics={"accuracy": 0.5})
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    manifest = layout.split(original, store)
    decoded = layout.decode(layout.encode(manifest))
    assert decoded == manifest
    rebuilt = layout.rebuild(decoded, store, tmp_path / "out.safetensors", durable=False)
    assert rebuilt.read_bytes() == original.read_bytes()
    assert {seg["tensor"] for seg in manifest["segments"]} == set(tensors)


def test_a_fine_tune_shares_the_backbone_blobs(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    base = layout.split(fine_tune(tmp_path / "a.safetensors", 1), store)
    tuned = layout.split(fine_tune(tmp_path / "b.safetensors", 2), store)
    shared = layout.blobs_of(base) & layout.blobs_of(tuned)
    by_tensor = {seg["tensor"]: seg["digest"] for seg in tuned["segments"]}
    assert {by_tensor[name] for name in backbone(0)} <= shared
    assert by_tensor["head.weight"] not in layout.blobs_of(base)
    assert layout.version_id(base) != layout.version_id(tuned)


def test_the_same_file_gives_the_same_version_id(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    path = write_model(tmp_path / "m.safetensors", {**backbone(0), **head(0)})
    assert layout.version_id(layout.split(path, store)) == layout.version_id(layout.split(path, store))
    with_card = layout.split(path, store, card="# my model\n")
    assert layout.version_id(with_card) != layout.version_id(layout.split(path, store))
    assert layout.read_card(with_card, store) == "# my model\n"


def test_a_damaged_blob_is_refused_naming_its_digest(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    manifest = layout.split(fine_tune(tmp_path / "a.safetensors", 1), store)
    victim = manifest["segments"][0]["digest"]
    blob = store.committer.path(blob_name(victim))
    blob.chmod(0o644)
    damaged = bytearray(blob.read_bytes())
    damaged[0] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    out = tmp_path / "out.safetensors"
    with pytest.raises(IntegrityError, match=victim):
        layout.rebuild(manifest, store, out, durable=False)
    assert not out.exists()


@pytest.mark.parametrize("text, message", [
    (b"[]", "not a modelkeep.registry.version/1"),
    (b'{"layout": "other"}', "not a modelkeep.registry.version/1"),
    (b'{"layout": "modelkeep.registry.version/1"}', "missing or mistypes"),
    (b"{" * 100, None),
])
def test_malformed_manifests_are_format_errors(text, message):
    with pytest.raises(FormatError, match=message):
        layout.decode(text)


def test_a_manifest_whose_sizes_lie_is_refused(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs", durable=False)
    manifest = layout.split(fine_tune(tmp_path / "a.safetensors", 1), store)
    manifest["segments"][0]["size"] += 1
    with pytest.raises(FormatError, match="do not add up"):
        layout.decode(layout.encode(manifest))

"""The embedded registry: push/pull/list/show/aliases/remove/gc over a folder and a SQLite index."""
from __future__ import annotations

import multiprocessing
import os

import pytest

from modelkeep import registry
from modelkeep.errors import ConfigError, IntegrityError, ModelNotFoundError
from modelkeep.io.blobstore import blob_name
from modelkeep.registry import EmbeddedRegistry

from registry_files import backbone, fine_tune, head, write_model


@pytest.fixture()
def reg(tmp_path):
    return EmbeddedRegistry(tmp_path / "registry", durable=False)


def test_push_then_pull_is_byte_identical(reg, tmp_path):
    original = fine_tune(tmp_path / "m.safetensors", 1, metrics={"accuracy": 0.91})
    version = reg.push(original, "digits", alias="production", card="# Digits\n")
    assert version.name == "digits" and len(version.id) == 64 and version.aliases == ("production",)
    assert version.metrics == {"accuracy": 0.91} and version.size == original.stat().st_size
    for ref in ("digits", f"digits:{version.id}", f"digits:{version.id[:8]}", "digits@production"):
        out = reg.pull(ref, tmp_path / f"out-{ref.replace(':', '_').replace('@', '_')}.safetensors")
        assert out.read_bytes() == original.read_bytes()
    folder = tmp_path / "pulled"
    folder.mkdir()
    assert reg.pull("digits", folder) == folder / "digits.safetensors"
    assert reg.card("digits") == "# Digits\n"


def test_pushing_the_same_file_twice_gives_one_version(reg, tmp_path):
    path = fine_tune(tmp_path / "m.safetensors", 1)
    assert reg.push(path, "m").id == reg.push(path, "m").id
    assert len(reg.list()) == 1


def test_the_environment_variable_chooses_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELKEEP_REGISTRY", str(tmp_path / "env-registry"))
    version = registry.push(fine_tune(tmp_path / "m.safetensors", 1), "m")
    assert (tmp_path / "env-registry" / "index.sqlite").exists()
    assert registry.show("m").id == version.id
    assert registry.pull("m", tmp_path / "o.safetensors").exists()


def test_aliases_move_and_name_alone_is_the_latest(reg, tmp_path):
    first = reg.push(fine_tune(tmp_path / "a.safetensors", 1), "m", alias="production")
    second = reg.push(fine_tune(tmp_path / "b.safetensors", 2), "m", alias="best", parent=f"m:{first.id}")
    assert reg.show("m").id == second.id and reg.show("m").parent == first.id
    assert reg.show("m@production").id == first.id
    reg.set_alias("m", second.id[:10], "production")
    assert reg.show("m@production").id == second.id
    assert reg.show(f"m:{first.id}").aliases == ()
    assert reg.show("m").aliases == ("best", "production")
    reg.remove("m@best")
    with pytest.raises(ModelNotFoundError, match="m@best"):
        reg.show("m@best")


def test_list_filters_by_name_and_metrics(reg, tmp_path):
    reg.push(fine_tune(tmp_path / "a.safetensors", 1, metrics={"accuracy": 0.8}, hyperparameters={"lr": 0.1}), "cats")
    reg.push(fine_tune(tmp_path / "b.safetensors", 2, metrics={"accuracy": 0.95}), "dogs")
    assert [v.name for v in reg.list()] == ["cats", "dogs"]
    assert [v.name for v in reg.list("accuracy>0.9")] == ["dogs"]
    assert [v.name for v in reg.list("cat")] == ["cats"]
    assert [v.name for v in reg.list("lr=0.1 accuracy<=0.8")] == ["cats"]
    assert reg.list("dogs accuracy<0.5") == []


def test_bad_refs_are_config_errors(reg):
    for ref in ("bad name", "m:xyz", "m@", "../escape"):
        with pytest.raises(ConfigError):
            reg.show(ref)
    with pytest.raises(ModelNotFoundError, match="ls"):
        reg.show("missing")


def test_a_corrupted_blob_is_refused_on_pull(reg, tmp_path):
    version = reg.push(fine_tune(tmp_path / "m.safetensors", 1), "m")
    digest = reg.manifest("m", version.id)["segments"][-1]["digest"]
    blob = reg.blobs.committer.path(blob_name(digest))
    blob.chmod(0o644)
    blob.write_bytes(b"\0" + blob.read_bytes()[1:])
    out = tmp_path / "out.safetensors"
    with pytest.raises(IntegrityError, match=digest):
        reg.pull("m", out)
    assert not out.exists()


def test_remove_and_gc_keep_only_what_versions_reference(reg, tmp_path):
    keep = reg.push(fine_tune(tmp_path / "a.safetensors", 1), "m")
    gone = reg.push(fine_tune(tmp_path / "b.safetensors", 2), "m")
    assert reg.gc() == []  # unreferenced blobs within the grace period stay
    assert reg.remove(f"m:{gone.id}") == [gone.id]
    assert reg.gc() == []  # still within the grace period: a push in flight could be using them
    removed = set(reg.gc(grace_seconds=0))
    assert gone.id in removed and len(removed) == 4  # manifest, header, head weight and bias
    assert reg.pull("m", tmp_path / "o.safetensors").read_bytes() == (tmp_path / "a.safetensors").read_bytes()
    assert keep.id not in removed
    reg.remove("m")
    assert reg.list() == [] and len(reg.gc(grace_seconds=0)) > 0 and reg.blobs.list() == []


def test_ten_frozen_backbone_fine_tunes_share_storage(reg, tmp_path):
    # A backbone of 1 MiB: per-version overhead (header and manifest, a few KB) is what the goal bounds.
    files = [fine_tune(tmp_path / f"ft{i}.safetensors", i, width=256) for i in range(10)]
    for i, path in enumerate(files):
        reg.push(path, "ft", alias=f"v{i}")
    as_files = sum(p.stat().st_size for p in files)
    stored = reg.storage_bytes()
    one = files[0].stat().st_size
    heads = sum(t.numel() * t.element_size() for t in head(0, 256).values()) * 10
    print(f"\n10 fine-tunes: {as_files:,} bytes as files, {stored:,} bytes in the registry "
          f"({stored / as_files:.2f}x); one model {one:,} + ten heads {heads:,}")
    assert stored <= 1.2 * one + heads


def _push_many(root, paths, name):
    reg = EmbeddedRegistry(root, durable=False)
    return [reg.push(path, name).id for path in paths]


def test_four_processes_pushing_at_once_lose_nothing(tmp_path):
    root = tmp_path / "registry"
    EmbeddedRegistry(root, durable=False)
    jobs = [[fine_tune(tmp_path / f"p{p}-{i}.safetensors", 100 * p + i) for i in range(5)] for p in range(4)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_push_many, [(root, paths, f"m{p}") for p, paths in enumerate(jobs)])
    reg = EmbeddedRegistry(root, durable=False)
    assert len(reg.list()) == 20
    for p, ids in enumerate(results):
        for i, version_id in enumerate(ids):
            out = reg.pull(f"m{p}:{version_id}", tmp_path / "o.safetensors")
            assert out.read_bytes() == jobs[p][i].read_bytes()


def test_a_blob_collected_during_a_push_is_put_again(reg, tmp_path, monkeypatch):
    original = fine_tune(tmp_path / "m.safetensors", 1)
    real_refresh = reg._refresh
    calls = []

    def lose_a_blob_then_refresh(digests):
        if not calls:  # as if gc deleted one after the push put it
            reg.blobs.delete(sorted(digests)[0])
        calls.append(digests)
        return real_refresh(digests)

    monkeypatch.setattr(reg, "_refresh", lose_a_blob_then_refresh)
    version = reg.push(original, "m")
    assert len(calls) == 1
    assert reg.pull(f"m:{version.id}", tmp_path / "o.safetensors").read_bytes() == original.read_bytes()


def test_gc_while_pushing_loses_nothing(tmp_path):
    root = tmp_path / "registry"
    EmbeddedRegistry(root, durable=False)
    paths = [fine_tune(tmp_path / f"g{i}.safetensors", i) for i in range(8)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        pushing = pool.starmap_async(_push_many, [(root, paths[:4], "a"), (root, paths[4:], "b")])
        collecting = pool.apply_async(_collect_repeatedly, (root, 20))
        results = pushing.get(timeout=60)
        collecting.get(timeout=60)
    reg = EmbeddedRegistry(root, durable=False)
    for name, ids, files in (("a", results[0], paths[:4]), ("b", results[1], paths[4:])):
        for version_id, path in zip(ids, files):
            assert reg.pull(f"{name}:{version_id}", tmp_path / "o.safetensors").read_bytes() == path.read_bytes()


def _collect_repeatedly(root, times):
    reg = EmbeddedRegistry(root, durable=False)
    for _ in range(times):
        reg.gc(grace_seconds=0)


def test_a_real_modelkeep_file_round_trips_and_loads(reg, tmp_path):
    import torch

    from modelkeep.artifact import load, save
    from modelkeep.nn import build
    from modelkeep.quickstart import DIGITS_CNN

    original = save(build(DIGITS_CNN, seed=0), tmp_path / "digits.safetensors")
    version = reg.push(original, "digits", alias="production")
    pulled = reg.pull("digits@production", tmp_path / "pulled.safetensors")
    assert pulled.read_bytes() == original.read_bytes() and version.size == original.stat().st_size
    a, b = load(original), load(pulled)
    assert a.content_hash == b.content_hash
    for (name, x), (_, y) in zip(a.module.state_dict().items(), b.module.state_dict().items()):
        assert torch.equal(x, y), name

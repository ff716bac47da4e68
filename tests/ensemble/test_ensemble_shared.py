"""Tensors shared between members stored once (issue 15, item 1): ten fine-tunes of one base with a frozen body
make a file of about one body and ten heads; every member comes back intact and predicts as its own file does;
references that name a missing, doubled, chained or mismatched tensor are FormatErrors; loading shares memory
instead of copying it, so references cannot multiply what a small file expands to."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from modelkeep import fit, load, save
from modelkeep.artifact import read_manifest, read_tensors
from modelkeep.artifact.manifest_builder import build_manifest, manifest_metadata
from modelkeep.artifact.tensors import write_tensors
from modelkeep.data import dataset_from_arrays
from modelkeep.ensemble import ensemble
from modelkeep.errors import FormatError
from modelkeep.nn import build

from task_specs import multiclass_data

BODY = {"layers": [{"kind": "Input", "shape": [4]},
                   {"kind": "Dense", "name": "body", "units": 256, "activation": "relu"},
                   {"kind": "Dense", "name": "neck", "units": 256, "activation": "relu"},
                   {"kind": "Dense", "name": "head", "units": 3}]}
COUNT = 10


@pytest.fixture(scope="module")
def fine_tunes(tmp_path_factory):
    """Ten fine-tunes of one base: body and neck frozen, each head trained with its own seed."""
    folder = tmp_path_factory.mktemp("fine_tunes")
    rng = np.random.default_rng(0)
    train = dataset_from_arrays(*multiclass_data(rng, 120, noise=0.8, shift=1.5), name="train")
    x, _ = multiclass_data(rng, 50, noise=0.8, shift=1.5)
    paths = []
    for seed in range(COUNT):
        model = build(BODY, seed=0)  # the same base every time
        for layer in ("body", "neck"):
            model.layers[layer].requires_grad_(False)
        result = fit(model, train, epochs=1, batch_size=32, learning_rate=0.05, progress=False, seed=seed)
        paths.append(save(result, folder / f"tune_{seed}.safetensors", durable=False))
    return paths, x


def test_ten_fine_tunes_store_the_frozen_body_once(fine_tunes, tmp_path):
    paths, x = fine_tunes
    out = ensemble(paths, tmp_path / "shared.safetensors", durable=False)
    full = ensemble(paths, tmp_path / "full.safetensors", share=False, durable=False)
    one = paths[0].stat().st_size
    body = sum(t.numel() * 4 for n, t in load(paths[0]).module.state_dict().items() if not n.startswith("layers.head"))
    heads = one - body  # head weights plus one member's manifest
    assert out.stat().st_size < one + COUNT * heads, (out.stat().st_size, one, heads)
    assert full.stat().st_size > COUNT * body
    _, manifest = read_manifest(out)
    shared = manifest.architecture["shared"]
    assert len(shared) == 4 * (COUNT - 1)  # body and neck, weight and bias, of members 1..9
    assert set(shared.values()) == {f"members.0.layers.{layer}.0.{p}" for layer in ("body", "neck")
                                    for p in ("weight", "bias")}  # Dense with an activation: layers.<name>.0.
    assert "shared" not in read_manifest(full)[1].architecture  # the older layout, still written with share=False
    loaded, unshared = load(out), load(full)
    xt = torch.from_numpy(loaded.preprocess(x))
    for index, path in enumerate(paths):
        own = load(path)
        member = loaded.module.members[index]
        for name, tensor in own.module.state_dict().items():
            assert torch.equal(member.state_dict()[name], tensor), (index, name)
        assert torch.equal(member(xt), own.module(xt))
        np.testing.assert_array_equal(unshared.module.members[index](xt).detach(), own.module(xt).detach())
    np.testing.assert_allclose(loaded.predict(x).probabilities, unshared.predict(x).probabilities, atol=0, rtol=0)
    assert loaded.content_hash != unshared.content_hash  # different tensors stored, so different files


@pytest.mark.parametrize("mmap", [True, False])
def test_references_share_memory_instead_of_copying(fine_tunes, tmp_path, mmap):
    paths, _ = fine_tunes
    loaded = load(ensemble(paths, tmp_path / "shared.safetensors", durable=False), mmap=mmap)
    pointers = {m.state_dict()["layers.body.0.weight"].data_ptr() for m in loaded.module.members}
    assert len(pointers) == 1


def test_a_loaded_shared_ensemble_saves_again_with_its_references(fine_tunes, tmp_path):
    paths, x = fine_tunes
    loaded = load(ensemble(paths[:3], tmp_path / "e.safetensors", durable=False))
    again = load(save(loaded, tmp_path / "again.safetensors", durable=False))
    assert again.manifest.architecture["shared"] == loaded.manifest.architecture["shared"]
    assert again.content_hash == loaded.content_hash
    dense = loaded.module.members[2].layers["body"][0]
    with torch.no_grad():  # a member changed after loading is no longer identical: it is stored in full
        dense.weight = torch.nn.Parameter(dense.weight + 1)
    changed = read_manifest(save(loaded, tmp_path / "changed.safetensors", durable=False))[1].architecture["shared"]
    assert "members.2.layers.body.0.weight" not in changed and "members.1.layers.body.0.weight" in changed
    assert torch.equal(load(tmp_path / "changed.safetensors").module.members[2].layers["body"][0].weight,
                       dense.weight)


def _rewrite(source, target, change_architecture=None, change_tensors=None):
    """``source`` written again with its architecture and tensors changed and a fresh, valid integrity record."""
    _, manifest = read_manifest(source)
    tensors = dict(read_tensors(source))
    architecture = copy.deepcopy(manifest.architecture)
    if change_architecture:
        change_architecture(architecture)
    if change_tensors:
        change_tensors(tensors)
    rebuilt = build_manifest(architecture, task=manifest.task, labels=manifest.labels,
                             postprocessing=manifest.postprocessing, signature=manifest.signature, where="test")
    return write_tensors(target, tensors, manifest_metadata(rebuilt), durable=False)


ALIAS, TARGET = "members.1.layers.body.0.weight", "members.0.layers.body.0.weight"


@pytest.mark.parametrize("architecture,tensors,message", [
    (None, lambda t: t.pop(TARGET), "missing"),  # the tensor a reference names is not stored
    (None, lambda t: t.__setitem__(ALIAS, t[TARGET].clone()), "unexpected"),  # stored and referenced
    (lambda a: a["shared"].update({"members.2.layers.body.0.weight": ALIAS}), None, "itself a reference"),
    (lambda a: a["shared"].update({ALIAS: "members.0.layers.head.weight"}), None, "only identical tensors"),
    (lambda a: a["shared"].update({ALIAS: "members.7.layers.body.0.weight"}), None, "does not name two tensors"),
    (lambda a: a["shared"].update({"../etc": TARGET}), None, "must name two member tensors"),
    (lambda a: a.update(shared=[ALIAS, TARGET]), None, "must map tensor names"),
])
def test_broken_references_are_format_errors(fine_tunes, tmp_path, architecture, tensors, message):
    paths, _ = fine_tunes
    good = ensemble(paths[:3], tmp_path / "good.safetensors", durable=False)
    bad = _rewrite(good, tmp_path / "bad.safetensors", architecture, tensors)
    with pytest.raises(FormatError, match=message):
        load(bad)


def test_inspect_counts_referenced_values_and_refuses_doubled_ones(fine_tunes, tmp_path):
    from modelkeep.artifact import describe

    paths, _ = fine_tunes
    good = ensemble(paths[:3], tmp_path / "good.safetensors", durable=False)
    info = describe(good, verify=True)
    assert info["total_parameters"] == 3 * describe(paths[0])["total_parameters"]
    assert info["architecture"]["shared_tensors"] == 8
    doubled = _rewrite(good, tmp_path / "doubled.safetensors",
                       change_tensors=lambda t: t.__setitem__(ALIAS, t[TARGET].clone()))
    with pytest.raises(FormatError, match="stored twice"):
        describe(doubled)


def test_shared_and_stacking_manifests_validate_against_both_schemas(fine_tunes, tmp_path):
    import json
    from pathlib import Path

    jsonschema = pytest.importorskip("jsonschema")
    from modelkeep.artifact import manifest_schema

    paths, x = fine_tunes
    shared = ensemble(paths[:3], tmp_path / "shared.safetensors", durable=False)
    y = load(paths[0]).predict(x).probabilities.argmax(axis=1)
    stacked = ensemble(paths[:3], tmp_path / "stacked.safetensors", method="stacking", validation=(x, y),
                       durable=False)
    documented = json.loads((Path(__file__).parents[2] / "docs" / "format.schema.json").read_text())
    for path in (shared, stacked):
        manifest = read_manifest(path)[1].to_dict()
        jsonschema.validate(manifest, manifest_schema())
        jsonschema.validate(manifest, documented)
    broken = read_manifest(shared)[1].to_dict()
    broken["architecture"]["shared"] = {"layers.body.0.weight": "members.0.layers.body.0.weight"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, manifest_schema())

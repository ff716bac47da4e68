"""The ``ensemble`` architecture codec and module: hostile documents refused, ties decided as documented,
sequence outputs combined per position, the schema, and inference that imports no training code."""
from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from modelkeep import load, save
from modelkeep.artifact.ensemble_codec import METHODS as CODEC_METHODS, EnsembleCodec, MAX_MEMBERS
from modelkeep.ensemble import ensemble
from modelkeep.errors import ConfigError, FormatError
from modelkeep.nn import build
from modelkeep.nn.ensemble import METHODS, Ensemble, normalised_weights
from modelkeep.spec import load_spec

from task_specs import SEQ, VOCAB, dense_spec

HASH = "xxh3-128:" + "0" * 32


def _document(count=2, units=3):
    spec = build(load_spec(dense_spec(4, units)), seed=0).spec.to_dict()
    return {"type": "ensemble", "method": "soft-vote", "outputs": "probabilities", "weights": [1 / count] * count,
            "members": [{"content_hash": HASH, "architecture": {"type": "spec", "spec": copy.deepcopy(spec)},
                         "prefix": f"members.{i}.", "activation": "softmax"} for i in range(count)]}


def test_the_method_names_agree_everywhere():
    from modelkeep.cli.ensemble import _METHODS

    assert METHODS == CODEC_METHODS == _METHODS


def test_a_valid_document_decodes_on_the_meta_device():
    rebuilt = EnsembleCodec().decode(_document(), where="test")
    assert rebuilt.on_meta and isinstance(rebuilt.module, Ensemble)
    assert all(t.is_meta for t in rebuilt.module.state_dict().values())
    assert sorted({name.split(".")[1] for name in rebuilt.module.state_dict()}) == ["0", "1"]


def _broken(change):
    document = _document()
    change(document)
    return document


@pytest.mark.parametrize("change,message", [
    (lambda d: d["members"][1].update(architecture={"type": "class", "class": "os:system"}), "user-defined class"),
    (lambda d: d["members"][1].update(architecture={"type": "graph"}), "only 'spec' members"),
    (lambda d: d["members"][1].update(prefix="members.0."), "must have prefix 'members.1.'"),
    (lambda d: d["members"][0].update(activation="exp"), "activation 'exp'"),
    (lambda d: d["members"][0].update(content_hash="md5:abc"), "content_hash"),
    (lambda d: d.update(method="bagging"), "method 'bagging' is not known"),
    (lambda d: d.update(weights=[0.9, 0.9]), "summing to 1"),
    (lambda d: d.update(weights=[1.0]), "one number >= 0 per member"),
    (lambda d: d.update(weights=[float("nan"), 1.0]), "weights"),
    (lambda d: d.update(members=[]), "a list of 1 to"),
    (lambda d: d.update(members=d["members"] * (MAX_MEMBERS // 2 + 1),
                        weights=[1 / (MAX_MEMBERS + 2)] * (MAX_MEMBERS + 2)), "a list of 1 to"),
    (lambda d: d.update(outputs="values"), "ensemble in the file is invalid"),
    (lambda d: d["members"][1]["architecture"]["spec"]["layers"][0].update(shape=[5]), "must share the input"),
])
def test_hostile_or_broken_documents_are_format_errors(change, message):
    with pytest.raises(FormatError, match=message):
        EnsembleCodec().decode(_broken(change), where="test")


def test_weights_are_checked_and_normalised():
    assert normalised_weights([1, 2, 1], 3) == (0.25, 0.5, 0.25)
    assert normalised_weights(None, 4) == (0.25,) * 4
    for bad, message in (([1, -1], ">= 0"), ([0, 0], "sum to 0"), ([1], "one weight per member"),
                         ([True, 1], "finite numbers")):
        with pytest.raises(ConfigError, match=message):
            normalised_weights(bad, 2)


def _voter(units, favourite, seed=0):
    """A dense member whose output always favours class ``favourite`` (for one unit: 1 = positive, 0 = negative)."""
    module = build(load_spec(dense_spec(4, units)), seed=seed)
    with torch.no_grad():
        head = module.layers["head"]
        head.weight.zero_()
        head.bias.fill_(-5.0)
        head.bias[0 if units == 1 else favourite] = 5.0 if units != 1 or favourite == 1 else -5.0
    return module


def test_majority_ties_go_to_the_lowest_class_index_and_even_binary_splits_to_class_one():
    x = torch.randn(4, 4)
    three = Ensemble([_voter(3, 2), _voter(3, 1), _voter(3, 0)], method="majority", activations=["softmax"] * 3)
    shares = three(x)
    assert torch.allclose(shares, torch.full((4, 3), 1 / 3))
    assert shares.argmax(dim=-1).tolist() == [0, 0, 0, 0]
    two = Ensemble([_voter(3, 2), _voter(3, 1), _voter(3, 2)], method="majority", activations=["softmax"] * 3)
    assert two(x).argmax(dim=-1).tolist() == [2, 2, 2, 2]
    binary = Ensemble([_voter(1, 0), _voter(1, 1)], method="majority", activations=["sigmoid"] * 2)
    assert torch.equal(binary(x), torch.full((4, 1), 0.5))  # the sigmoid rule p >= 0.5 makes this class 1


def test_a_sequence_output_is_combined_per_position(tmp_path):
    spec = {"layers": [{"kind": "Input", "name": "tokens", "shape": [SEQ], "dtype": "int64"},
                       {"kind": "Embedding", "num_embeddings": VOCAB, "embedding_dim": 8},
                       {"kind": "Dense", "name": "head", "units": VOCAB}]}
    paths = [save(build(load_spec(spec), seed=seed), tmp_path / f"lm{seed}.safetensors", durable=False)
             for seed in range(3)]
    x = np.random.default_rng(0).integers(0, VOCAB, (5, SEQ))
    members = [load(p).predict(x) for p in paths]
    for method in ("soft-vote", "majority"):
        got = load(ensemble(paths, tmp_path / f"{method}.safetensors", method=method, durable=False)).predict(x)
        if method == "soft-vote":
            expected = sum(m.probabilities.astype(np.float64) for m in members) / 3
        else:
            expected = sum(np.eye(VOCAB)[m.probabilities.argmax(axis=-1)] for m in members) / 3
        assert got.probabilities.shape == (5, SEQ, VOCAB)
        np.testing.assert_allclose(got.probabilities, expected, atol=1e-6, rtol=0)
    # stacking reads the members' (N, T, M * V) probabilities per position and learns from a target per position
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, VOCAB, (40, SEQ))
    stacked = load(ensemble(paths, tmp_path / "stacking.safetensors", method="stacking",
                            validation=(tokens, (tokens + 1) % VOCAB), durable=False))
    assert tuple(stacked.module.meta.weight.shape) == (VOCAB, 3 * VOCAB)
    features = torch.cat([torch.from_numpy(m.probabilities).double() for m in members], dim=-1)
    logits = features @ stacked.module.meta.weight.detach().double().T + stacked.module.meta.bias.detach().double()
    np.testing.assert_allclose(stacked.predict(x).probabilities, torch.softmax(logits, -1).numpy(), atol=1e-5)
    assert stacked.manifest.lineage["stacking"]["rows"] == 40 * SEQ



def test_an_ensemble_manifest_validates_against_the_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from modelkeep.artifact import manifest_schema, read_manifest

    paths = [save(build(load_spec(dense_spec(4, 3)), seed=s), tmp_path / f"m{s}.safetensors", durable=False)
             for s in range(2)]
    _, manifest = read_manifest(ensemble(paths, tmp_path / "e.safetensors", durable=False))
    jsonschema.validate(manifest.to_dict(), manifest_schema())  # the shipped schema describes ensembles


def test_loading_and_predicting_an_ensemble_imports_no_training_code(tmp_path):
    paths = [save(build(load_spec(dense_spec(4, 3)), seed=s), tmp_path / f"m{s}.safetensors", durable=False)
             for s in range(2)]
    out = ensemble(paths, tmp_path / "e.safetensors", durable=False)
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import modelkeep
        prediction = modelkeep.load({str(out)!r}).predict(np.zeros((2, 4), dtype=np.float32))
        assert len(prediction.labels) == 2
        print(",".join(sorted(m for m in sys.modules if m.startswith(("modelkeep.train", "modelkeep.checkpoint",
                                                                       "modelkeep.ensemble")))))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_a_loaded_ensemble_saves_again_as_an_ensemble(tmp_path):
    from modelkeep.artifact import load

    paths = [save(build(load_spec(dense_spec(4, 3)), seed=s), tmp_path / f"m{s}.safetensors", durable=False)
             for s in range(2)]
    loaded = load(ensemble(paths, tmp_path / "e.safetensors", durable=False))
    again = load(save(loaded, tmp_path / "again.safetensors", durable=False))
    assert again.manifest.architecture["type"] == "ensemble" and again.content_hash == loaded.content_hash

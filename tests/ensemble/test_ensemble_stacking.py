"""Stacking (issue 15, item 1): a meta-model fitted on the members' validation predictions, saved in the same file.

The meta-model must be the exact penalised logistic (or linear) regression it claims to be (checked against
scikit-learn), load and predict with nothing else, and on held-out rows do at least as well as the mean member:
on the real digits data and over the task matrix (binary one-logit, multi-class, regression, token sequences)."""
from __future__ import annotations

import numpy as np
import pytest

from modelkeep import load
from modelkeep.artifact import describe, read_manifest
from modelkeep.ensemble import ensemble
from modelkeep.errors import ConfigError, DataError

from ensemble_members import TASKS, train_members


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stacking_members")
    return {task: train_members(task, folder) for task in TASKS}


def _validation(task, rows=200, seed=7):
    return TASKS[task][0](np.random.default_rng(seed), rows)


def _features(paths, x, task):
    """The members' own answers, concatenated: what the meta-model reads."""
    columns = []
    for path in paths:
        prediction = load(path).predict(x)
        if task == "regression":
            columns.append(prediction.values.astype(np.float64))
        elif task == "binary_one_logit":
            columns.append(prediction.probabilities[:, 1:].astype(np.float64))  # the one output, p(class 1)
        else:
            columns.append(prediction.probabilities.astype(np.float64))
    return np.concatenate(columns, axis=-1)


def _score(task, prediction, y):
    """Higher is better: accuracy, or minus the mean squared error."""
    if task == "regression":
        return -float(np.mean((prediction.values - y) ** 2))
    names = prediction.class_names
    return float(np.mean(np.asarray(prediction.labels) == np.asarray([names[int(i)] for i in y])))


@pytest.mark.parametrize("task", list(TASKS))
def test_stacking_predicts_its_meta_model_and_matches_the_mean_member(members, task, tmp_path):
    paths, x, y = members[task]
    out = ensemble(paths, tmp_path / "stacked.safetensors", method="stacking", validation=_validation(task),
                   durable=False)
    model = load(out)
    header, manifest = read_manifest(out)
    assert manifest.architecture["method"] == "stacking" and "meta.weight" in header.tensors
    weight = model.module.meta.weight.detach().double().numpy()
    bias = model.module.meta.bias.detach().double().numpy()
    logits = _features(paths, x, task) @ weight.T + bias
    got = model.predict(x)
    if task == "regression":
        np.testing.assert_allclose(got.values, logits, atol=1e-5, rtol=0)
    elif task == "binary_one_logit":
        np.testing.assert_allclose(got.probabilities[:, 1], 1 / (1 + np.exp(-logits[:, 0])), atol=1e-5, rtol=0)
    else:
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(got.probabilities, expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    members_scores = [_score(task, load(p).predict(x), y) for p in paths]
    assert _score(task, got, y) >= np.mean(members_scores) - 1e-9, (_score(task, got, y), members_scores)
    assert describe(out, verify=True)["total_parameters"] == 3 * describe(paths[0])["total_parameters"] + bias.size * (
        1 + weight.shape[1])
    record = manifest.lineage["stacking"]
    assert record["rows"] == 200 and record["optimizer"] == "lbfgs" and record["data_fingerprint"].startswith("xxh3")


def test_the_meta_model_is_the_exact_penalised_logistic_regression(members, tmp_path):
    """scikit-learn's multinomial LogisticRegression minimises 0.5|W|^2 + C * sum(loss); ours mean(loss) + p|W|^2,
    the same problem when C = 1 / (2 p n). The two solutions must agree."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    paths, _, _ = members["multiclass"]
    vx, vy = _validation("multiclass")
    penalty = 0.01
    model = load(ensemble(paths, tmp_path / "s.safetensors", method="stacking", validation=(vx, vy),
                          penalty=penalty, durable=False))
    reference = linear_model.LogisticRegression(C=1 / (2 * penalty * len(vx)), tol=1e-10, max_iter=10_000)
    reference.fit(_features(paths, vx, "multiclass"), vy)
    np.testing.assert_allclose(model.module.meta.weight.detach().numpy(), reference.coef_, atol=2e-3)
    np.testing.assert_allclose(model.module.meta.bias.detach().numpy(), reference.intercept_, atol=2e-3)


def test_stacking_is_deterministic(members, tmp_path):
    paths, _, _ = members["multiclass"]
    hashes = {load(ensemble(paths, tmp_path / f"s{i}.safetensors", method="stacking",
                            validation=_validation("multiclass"), durable=False)).content_hash for i in range(2)}
    assert len(hashes) == 1


def test_on_digits_stacking_beats_or_matches_the_mean_member(digits_splits, tmp_path):
    from modelkeep import fit, save
    from modelkeep.data import Standardize
    from modelkeep.nn import build

    spec = {"layers": [{"kind": "Input", "shape": [1, 8, 8]}, {"kind": "Flatten"},
                       {"kind": "Dense", "units": 32, "activation": "relu"},
                       {"kind": "Dense", "name": "head", "units": 10}]}
    paths = []
    for seed in range(3):
        result = fit(build(spec, seed=seed), digits_splits.train, epochs=2, batch_size=64, learning_rate=0.01,
                     preprocessing=Standardize(per_feature=False), progress=False, seed=seed)
        paths.append(save(result, tmp_path / f"digits_{seed}.safetensors", durable=False))
    test = digits_splits.test
    stacked = load(ensemble(paths, tmp_path / "stacked.safetensors", method="stacking",
                            validation=digits_splits.validation, durable=False))
    accuracy = _score("multiclass", stacked.predict(test.x), test.y)
    members_accuracy = [_score("multiclass", load(p).predict(test.x), test.y) for p in paths]
    assert accuracy >= np.mean(members_accuracy) and accuracy >= 0.9, (accuracy, members_accuracy)


def test_the_cli_stacks_on_a_validation_file_and_refuses_in_one_line(members, tmp_path, capsys):
    from modelkeep.cli.main import main

    paths, x, _ = members["multiclass"]
    vx, vy = _validation("multiclass")
    np.savez(tmp_path / "validation.npz", x=vx, y=vy)
    out = tmp_path / "E.safetensors"
    status = main(["ensemble", *map(str, paths), "--method", "stacking", "--data", str(tmp_path / "validation.npz"),
                   "--out", str(out)])
    assert status == 0 and "wrote" in capsys.readouterr().out
    api = load(ensemble(paths, tmp_path / "api.safetensors", method="stacking", validation=(vx, vy), durable=False))
    np.testing.assert_allclose(load(out).predict(x).probabilities, api.predict(x).probabilities, atol=1e-6)
    status = main(["ensemble", *map(str, paths), "--method", "stacking", "--out", str(tmp_path / "F.safetensors")],
                  report_unexpected=True)
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "needs validation data" in err


def test_unusable_stacking_data_is_refused(members, tmp_path):
    paths, _, _ = members["multiclass"]
    vx, vy = _validation("multiclass")
    with pytest.raises(ConfigError, match="give no weights"):
        ensemble(paths, tmp_path / "a.safetensors", method="stacking", validation=(vx, vy), weights=[1, 1, 1])
    with pytest.raises(ConfigError, match="penalty must be"):
        ensemble(paths, tmp_path / "b.safetensors", method="stacking", validation=(vx, vy), penalty=-1.0)
    from modelkeep.data import dataset_from_arrays

    values = dataset_from_arrays(vx, vy.astype(np.float32), task="regression")
    with pytest.raises(DataError, match="is for regression but the members do classification"):
        ensemble(paths, tmp_path / "c.safetensors", method="stacking", validation=values)
    with pytest.raises(DataError, match="not among the labels"):
        ensemble(paths, tmp_path / "c.safetensors", method="stacking", validation=(vx, vy + 0.5))
    with pytest.raises(ConfigError, match="must be a Dataset"):
        ensemble(paths, tmp_path / "d.safetensors", method="stacking", validation=[vx, vy])
    assert not list(tmp_path.glob("*.safetensors"))

"""Saved post-processing: chosen from the task, loss and output width, written in the file, read back, never guessed."""
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
from modelkeep.artifact.format import KEY_INTEGRITY, KEY_MANIFEST, read_header
from modelkeep.cli.main import main
from modelkeep.errors import ConfigError, DataError, FormatError
from modelkeep.processing.postprocess import (
    Identity, Sigmoid, Softmax, make_postprocessor, postprocessor_for, postprocessor_from_dict,
)

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "format_v1"


def binary_spec(final: dict | None = None) -> dict:
    layers = [{"kind": "Input", "name": "x", "shape": [3]}, {"kind": "Dense", "name": "out", "units": 1}]
    return {"name": "binary", "layers": layers + ([final] if final else [])}


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main(list(args))
    return status, out.getvalue()


# -- choosing ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, units, final, loss, expected", [
    ("regression", 1, None, "mse", {"type": "identity"}),
    ("classification", 1, None, "binary_crossentropy", {"type": "sigmoid", "input": "logits", "threshold": 0.5}),
    ("classification", 1, "sigmoid", "bce", {"type": "sigmoid", "input": "probabilities", "threshold": 0.5}),
    ("classification", 1, None, "mse", {"type": "sigmoid", "input": "probabilities", "threshold": 0.5}),
    ("classification", 1, None, None, {"type": "sigmoid", "input": "logits", "threshold": 0.5}),
    ("classification", 3, None, "categorical_crossentropy", {"type": "softmax", "input": "logits"}),
    ("classification", 3, "softmax", "categorical_crossentropy", {"type": "softmax", "input": "probabilities"}),
    ("classification", None, None, "binary_crossentropy", {"type": "sigmoid", "input": "logits", "threshold": 0.5}),
    ("classification", None, None, None, {"type": "softmax", "input": "logits"}),
])
def test_the_post_processor_follows_task_loss_width_and_final_activation(task, units, final, loss, expected):
    chosen = postprocessor_for(task, output_units=units, final_activation=final, loss=loss)
    assert chosen.to_dict() == expected
    assert postprocessor_from_dict(expected).to_dict() == expected  # a round trip through its JSON document


def test_sigmoid_thresholds_at_one_half_and_reports_both_classes():
    sigmoid = Sigmoid(labels=("no", "yes"))
    logits = torch.tensor([[-3.0], [0.0], [2.0]])
    prediction = sigmoid.apply(logits)
    assert prediction.labels == ["no", "yes", "yes"]  # p = 0.5 is class 1
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert prediction.probabilities.shape == (3, 2) and prediction.class_names == ("no", "yes")
    probabilities = Sigmoid("probabilities", 0.5).apply(torch.tensor([[0.2], [0.7]]))
    assert probabilities.labels == ["0", "1"]
    np.testing.assert_allclose(probabilities.probabilities, [[0.8, 0.2], [0.3, 0.7]], rtol=1e-6)


def test_softmax_and_identity():
    prediction = Softmax(labels=("a", "b", "c")).apply(torch.tensor([[0.0, 2.0, 1.0]]))
    assert prediction.labels == ["b"]
    np.testing.assert_allclose(prediction.probabilities, torch.softmax(torch.tensor([[0.0, 2.0, 1.0]]), 1).numpy())
    values = Identity().apply(torch.tensor([[1.5], [2.5]]))
    assert values.probabilities is None and values.values.tolist() == [[1.5], [2.5]]


def test_a_post_processor_refuses_outputs_it_was_not_made_for():
    with pytest.raises(DataError, match="one output column.*sigmoid"):
        Softmax().apply(torch.zeros(2, 1))  # the old bug: softmax over one column is always 1.0
    with pytest.raises(DataError, match="3 output columns"):
        Sigmoid().apply(torch.zeros(2, 3))
    with pytest.raises(FormatError, match="names 3 classes"):
        Softmax(labels=("a", "b", "c")).apply(torch.zeros(2, 2))


def test_malformed_sections_are_format_errors_and_bad_choices_config_errors():
    with pytest.raises(FormatError, match="unknown post-processor 'run_shell'"):
        postprocessor_from_dict({"type": "run_shell"})
    with pytest.raises(FormatError, match="threshold"):
        postprocessor_from_dict({"type": "sigmoid", "threshold": 7})
    with pytest.raises(FormatError, match="'input'"):
        postprocessor_from_dict({"type": "softmax", "input": "raw"})
    with pytest.raises(ConfigError, match="did you mean 'sigmoid'"):
        make_postprocessor("sigmod")


# -- in the file ------------------------------------------------------------------------------------------------
def test_save_records_the_post_processor_and_load_uses_it(tmp_path):
    model = mk.build(binary_spec(), seed=0)
    path = save(model, tmp_path / "binary.safetensors", labels=["no", "yes"])
    loaded = load(path)
    assert loaded.manifest.postprocessing == {"type": "sigmoid", "input": "logits", "threshold": 0.5}
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    with torch.no_grad():
        p = torch.sigmoid(model(torch.from_numpy(x)))[:, 0].numpy()
    prediction = loaded.predict(x)
    assert prediction.labels == ["yes" if v >= 0.5 else "no" for v in p]
    np.testing.assert_allclose(prediction.probabilities[:, 1], p, rtol=1e-6)

    import jsonschema

    from modelkeep.artifact.manifest import manifest_schema

    jsonschema.validate(json.loads(read_header(path).metadata[KEY_MANIFEST]), manifest_schema())
    ends_in_sigmoid = mk.build(binary_spec({"kind": "Activation", "name": "p", "function": "sigmoid"}), seed=0)
    section = load(save(ends_in_sigmoid, tmp_path / "sigmoid.safetensors")).manifest.postprocessing
    assert section == {"type": "sigmoid", "input": "probabilities", "threshold": 0.5}


def test_an_explicit_choice_wins_and_a_re_save_keeps_the_section(tmp_path):
    model = mk.build(binary_spec(), seed=0)
    path = save(model, tmp_path / "m.safetensors", postprocessing=Sigmoid(threshold=0.9))
    assert load(path).manifest.postprocessing["threshold"] == 0.9
    again = save(load(path), tmp_path / "again.safetensors")
    assert load(again).manifest.postprocessing["threshold"] == 0.9


@pytest.mark.parametrize("path", sorted(V1.glob("*.safetensors")), ids=lambda p: p.name)
def test_files_without_the_section_get_it_derived_once_at_load(path, monkeypatch):
    assert "postprocessing" not in json.loads(read_header(path).metadata[KEY_MANIFEST])
    model_class = None
    if "user_class" in path.name:
        monkeypatch.syspath_prepend(str(path.parents[1]))
        from fixture_models import TinyNet as model_class  # noqa: N813
    model = load(path, model_class=model_class)
    assert model.postprocessor.to_dict() == {"type": "softmax", "input": "logits"}


def _rewrite_manifest(path: Path, change) -> Path:
    from modelkeep.artifact.tensors import read_tensors, write_tensors

    metadata = {k: v for k, v in read_header(path).metadata.items() if k != KEY_INTEGRITY}
    manifest = json.loads(metadata[KEY_MANIFEST])
    change(manifest)
    metadata[KEY_MANIFEST] = json.dumps(manifest)
    return write_tensors(path.with_name("edited.safetensors"), {k: v.clone() for k, v in read_tensors(path).items()},
                         metadata)


@pytest.mark.parametrize("section", [{"type": "run_shell"}, {"type": "sigmoid", "threshold": "half"}, "sigmoid"])
def test_a_hostile_section_is_refused_by_load_and_predict_but_shown_by_inspect(tmp_path, section):
    path = save(mk.build(binary_spec(), seed=0), tmp_path / "m.safetensors")
    edited = _rewrite_manifest(path, lambda m: m.update(postprocessing=section))
    with pytest.raises(FormatError):
        load(edited)
    np.save(tmp_path / "x.npy", np.zeros((2, 3), dtype=np.float32))
    assert cli("predict", str(edited), str(tmp_path / "x.npy"))[0] == 2
    status, _ = cli("inspect", str(edited))
    assert status == (0 if isinstance(section, dict) else 2)


# -- the issue: a one-logit binary model (breast cancer, binary cross-entropy) ------------------------------------
@pytest.fixture(scope="module")
def breast_cancer_model(tmp_path_factory):
    from modelkeep.data import load_dataset, split_dataset
    from modelkeep.processing import Standardize

    splits = split_dataset(load_dataset("breast_cancer"), seed=0)
    spec = {"name": "breast_cancer_logit", "layers": [
        {"kind": "Input", "name": "x", "shape": [30]},
        {"kind": "Dense", "name": "hidden", "units": 16, "activation": "relu"},
        {"kind": "Dense", "name": "out", "units": 1}]}
    result = mk.fit(mk.build(spec, seed=0), splits.train, splits.validation, splits.test, loss="binary_crossentropy",
                    epochs=20, batch_size=32, learning_rate=1e-2, preprocessing=Standardize(), progress=False, seed=0)
    path = save(result, tmp_path_factory.mktemp("bc") / "breast_cancer.safetensors")
    return path, splits.test, result


def test_one_logit_binary_model_predicts_the_right_classes(breast_cancer_model):
    path, test, result = breast_cancer_model
    model = load(path)
    assert model.manifest.postprocessing == {"type": "sigmoid", "input": "logits", "threshold": 0.5}
    truth = [test.labels[i] for i in test.y]
    prediction = model.predict(test.x)
    accuracy = float(np.mean(np.array(prediction.labels) == np.array(truth)))
    assert accuracy >= 0.9 and accuracy == pytest.approx(result.test_metrics["accuracy"], abs=1e-9)
    assert set(prediction.labels) == {"malignant", "benign"}  # before the fix: "malignant", 1.0, on every row
    assert prediction.probabilities.shape == (len(test), 2)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_one_logit_binary_model_predicts_the_right_classes_from_the_cli(breast_cancer_model, tmp_path):
    path, test, _ = breast_cancer_model
    np.save(tmp_path / "x.npy", test.x.astype(np.float32))
    status, text = cli("predict", str(path), str(tmp_path / "x.npy"), "--json")
    assert status == 0
    records = json.loads(text)
    assert [r["label"] for r in records] == load(path).predict(test.x).labels
    truth = [test.labels[i] for i in test.y]
    assert np.mean([r["label"] == t for r, t in zip(records, truth)]) >= 0.9
    assert {r["label"] for r in records} == {"malignant", "benign"}
    assert all(len(r["top"]) == 2 for r in records)


def test_save_refuses_a_post_processor_or_labels_the_output_contradicts(tmp_path):
    three = mk.build({"name": "m", "layers": [{"kind": "Input", "name": "x", "shape": [3]},
                                                {"kind": "Dense", "name": "out", "units": 3}]}, seed=0)
    with pytest.raises(ConfigError, match="3 outputs but the post-processing is 'sigmoid'"):
        save(three, tmp_path / "a.safetensors", postprocessing="sigmoid")
    with pytest.raises(ConfigError, match="2 labels were given but .* 3 classes"):
        save(three, tmp_path / "b.safetensors", labels=["a", "b"])
    with pytest.raises(ConfigError, match="3 labels were given but .* 2 classes"):
        save(mk.build(binary_spec(), seed=0), tmp_path / "c.safetensors", labels=["a", "b", "c"])
    assert not list(tmp_path.iterdir())


# -- sequence outputs (N, T, V): a class per position, e.g. a language model's next token ---------------------------
def test_softmax_of_a_sequence_output_is_over_the_last_axis():
    logits = torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(0))
    names = tuple(f"t{i}" for i in range(7))
    prediction = Softmax(labels=names).apply(logits)
    expected = torch.softmax(logits, dim=-1).numpy()
    assert prediction.sequence and prediction.probabilities.shape == (4, 5, 7)
    np.testing.assert_array_equal(prediction.probabilities, expected)
    assert prediction.labels == [[names[i] for i in row] for row in expected.argmax(-1).tolist()]
    records = prediction.to_records(top=2)
    assert len(records) == 4 and records[0]["labels"] == prediction.labels[0]
    assert records[0]["probabilities"] == pytest.approx(expected[0].max(-1).tolist())
    assert len(records[0]["top"]) == 5 and [len(t) for t in records[0]["top"]] == [2] * 5
    assert records[0]["top"][0][0] == {"label": prediction.labels[0][0], "probability": pytest.approx(expected[0, 0].max())}


def test_sequence_output_against_a_wrong_number_of_labels_names_the_class_count():
    with pytest.raises(FormatError, match="names 3 classes .* gives 7"):
        Softmax(labels=("a", "b", "c")).apply(torch.zeros(2, 5, 7))


def test_sigmoid_of_a_sequence_output_is_per_position():
    logits = torch.tensor([[[2.0], [-2.0], [0.0]]])
    prediction = Sigmoid(labels=("no", "yes")).apply(logits)
    assert prediction.probabilities.shape == (1, 3, 2)
    assert prediction.labels == [["yes", "no", "yes"]]
    assert Identity().apply(logits).values.shape == (1, 3, 1)


def test_two_dimensional_outputs_are_unchanged():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    prediction = Softmax(labels=tuple("abcd")).apply(logits)
    np.testing.assert_array_equal(prediction.probabilities, torch.softmax(logits, dim=1).numpy())
    assert not prediction.sequence and all(isinstance(label, str) for label in prediction.labels)
    assert set(prediction.to_records()[0]) == {"label", "probability", "top"}

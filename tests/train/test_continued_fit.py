"""fit(None, new, init_from=FILE): a saved model trained further on new data, for every task kind.

What must hold: the child starts from the parent's weights (not from scratch), keeps its classes and its
fitted preprocessing, reuses its optimizer state when it fits (warning when it does not), records the
lineage with both data fingerprints and a before/after table on the old and new test sets — in which
forgetting shows — and refuses data that does not fit the file, naming both sides.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from modelkeep import fit, load, save
from modelkeep.data import Standardize, dataset_from_arrays
from modelkeep.errors import ConfigError
from modelkeep.nn import build
from modelkeep.spec import load_spec
from modelkeep.train.checkpointing import CheckpointSettings
from modelkeep.train.continued import CONTINUED, OptimizerStateWarning, load_optimizer_state, open_parent

from task_specs import TOKEN_SPEC, binary_data, dense_spec, multiclass_data, regression_data, token_data

TASKS = {
    "binary_one_logit": (binary_data, dense_spec(4, 1), "binary_crossentropy"),
    "multiclass": (multiclass_data, dense_spec(4, 3), "categorical_crossentropy"),
    "regression": (regression_data, dense_spec(3, 1), "mse"),
    "token_sequence": (token_data, TOKEN_SPEC, "categorical_crossentropy"),
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _parent(tmp_path, task, *, optimizer=True, preprocessing=None):
    make, spec, loss = TASKS[task]
    rng = np.random.default_rng(0)
    train = dataset_from_arrays(*make(rng, 200), name=f"{task}-old")
    result = fit(build(load_spec(spec), seed=0), train, epochs=2, batch_size=32, learning_rate=0.01, loss=loss,
                 progress=False, preprocessing=preprocessing)
    path = save(result, tmp_path / f"{task}.safetensors", **({"optimizer": result.optimizer} if optimizer else {}))
    return path, make(rng, 60)


@pytest.mark.parametrize("task", list(TASKS))
def test_continued_training_starts_from_the_file_and_records_both_test_sets(task, tmp_path):
    path, old_test = _parent(tmp_path, task)
    make = TASKS[task][0]
    rng = np.random.default_rng(1)
    new, new_test = make(rng, 160), make(rng, 60)
    parent = load(path)
    result = fit(None, new, test=new_test, old_test=old_test, init_from=path, epochs=2, batch_size=32,
                 learning_rate=0.01, progress=False, seed=0)
    child = load(save(result, tmp_path / "child.safetensors"))
    _validate(child)
    lineage = child.lineage
    assert lineage["relation"] == CONTINUED
    assert lineage["parent"]["content_hash"] == parent.content_hash != child.content_hash
    assert lineage["data_fingerprints"]["parent"] == parent.manifest.provenance["data_fingerprint"]
    assert lineage["data_fingerprints"]["new"] == child.manifest.provenance["data_fingerprint"] \
        == result.data_fingerprint != lineage["data_fingerprints"]["parent"]
    table = lineage["evaluation"]
    assert set(table) == {"old_test", "new_test"}
    for row in table.values():
        assert row["samples"] == 60
        assert set(row["before"]) == set(row["after"]) and "loss" in row["before"]
        assert all(np.isfinite(v) for v in [*row["before"].values(), *row["after"].values()])
    # "before" is the parent itself: its loss on the new test set, computed here independently
    from modelkeep.train import evaluate

    independent = evaluate(parent.module, _as_dataset(new_test, parent),
                           loss=parent.manifest.hyperparameters["loss"], preprocessing=parent.preprocessing)
    assert table["new_test"]["before"]["loss"] == pytest.approx(independent["loss"], rel=1e-6)
    assert table["new_test"]["after"]["loss"] == pytest.approx(result.test_metrics["loss"], rel=1e-6)
    assert child.labels == parent.labels and child.manifest.task == parent.manifest.task
    assert child.manifest.hyperparameters["loss"] == parent.manifest.hyperparameters["loss"]  # the file's loss


def _validate(model):
    """The file against the documented schema (docs/format.schema.json, packaged with modelkeep)."""
    import jsonschema

    from modelkeep.artifact.manifest import manifest_schema

    jsonschema.validate(model.manifest.to_dict(), manifest_schema(), format_checker=jsonschema.FormatChecker())


def _as_dataset(pair, parent):
    from modelkeep.train.continued import fit_to_parent

    return fit_to_parent(pair, parent, "test")


def test_the_optimizer_state_is_loaded_and_used(tmp_path):
    path, _ = _parent(tmp_path, "multiclass")
    parent = open_parent(path)
    saved = parent.optimizer_state()
    optimizer = torch.optim.Adam(parent.module.parameters(), lr=0.5)
    assert load_optimizer_state(optimizer, parent) is None
    loaded = optimizer.state_dict()
    assert loaded["param_groups"][0]["lr"] == 0.5  # the new run's hyperparameters, the parent's moments
    for key, entry in saved["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(loaded["state"][key][name], entry[name])
    # end to end: the same continuation from a file without optimizer state ends elsewhere
    (tmp_path / "bare").mkdir()
    bare, _ = _parent(tmp_path / "bare", "multiclass", optimizer=False)
    new = multiclass_data(np.random.default_rng(3), 64)
    options = dict(epochs=1, batch_size=64, learning_rate=0.01, progress=False)
    with_state = fit(None, new, init_from=path, **options)
    without = fit(None, new, init_from=bare, **options)
    assert with_state.hyperparameters["optimizer_state"] == "continued from the parent"
    assert without.hyperparameters["optimizer_state"] == "fresh"
    a, b = with_state.model.state_dict(), without.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # same start weights, different moments: different steps


def test_another_optimizer_starts_fresh_with_a_warning(tmp_path):
    path, _ = _parent(tmp_path, "multiclass")
    new = multiclass_data(np.random.default_rng(3), 64)
    with pytest.warns(OptimizerStateWarning, match="fresh optimizer state.*Adam.*SGD"):
        result = fit(None, new, init_from=path, optimizer="sgd", epochs=1, progress=False)
    assert result.hyperparameters["optimizer_state"] == "fresh"


def test_forgetting_shows_on_a_shift_from_digits_0_4_to_5_9(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    labels = [str(i) for i in range(10)]
    old, new = y < 5, y >= 5
    old_x, old_y, new_x, new_y = x[old], y[old], x[new], y[new]
    old_train = dataset_from_arrays(old_x[:600], old_y[:600], name="digits 0-4", labels=labels)
    spec = {"layers": [{"kind": "Input", "shape": [64]}, {"kind": "Dense", "units": 32, "activation": "relu"},
                       {"kind": "Dense", "units": 10}]}
    first = fit(build(load_spec(spec), seed=0), old_train, epochs=8, learning_rate=0.01, progress=False,
                preprocessing=Standardize())
    path = save(first, tmp_path / "old.safetensors", optimizer=first.optimizer)
    result = fit(None, (new_x[:600], new_y[:600]), test=(new_x[600:], new_y[600:]),
                 old_test=(old_x[600:], old_y[600:]), init_from=path, epochs=8, learning_rate=0.01, progress=False)
    table = result.evaluation
    assert table["old_test"]["before"]["accuracy"] > 0.9
    assert table["new_test"]["before"]["accuracy"] == 0.0  # it never saw a 5-9
    assert table["new_test"]["after"]["accuracy"] > 0.85
    assert table["old_test"]["after"]["accuracy"] < table["old_test"]["before"]["accuracy"] - 0.3  # forgotten
    child = load(save(result, tmp_path / "new.safetensors"))
    assert child.manifest.preprocessing == load(path).manifest.preprocessing  # fitted on 0-4, never refitted
    assert child.labels == tuple(labels)


@pytest.mark.parametrize("data, message", [
    (lambda: (np.zeros((40, 4), np.float32), np.linspace(0, 1, 40, dtype=np.float32)),
     "regression dataset but .* was trained for classification"),
    (lambda: (np.zeros((40, 5), np.float32), np.arange(40) % 3), r"shape \[5\] but .* takes \[4\]"),
    (lambda: (np.zeros((40, 4), np.float32), np.arange(40) % 4), r"classes \['0', '1', '2', '3'\] but .* knows "
                                                                  r"\['0', '1', '2'\] \(new: \['3'\]\)"),
])
def test_data_that_does_not_fit_the_file_is_refused_naming_both(tmp_path, data, message):
    path, _ = _parent(tmp_path, "multiclass")
    with pytest.raises(ConfigError, match=message):
        fit(None, data(), init_from=path, epochs=1, progress=False)


def test_refusals_before_training(tmp_path):
    path, _ = _parent(tmp_path, "multiclass")
    new = multiclass_data(np.random.default_rng(3), 40)
    with pytest.raises(ConfigError, match="keeps the file's fitted preprocessing"):
        fit(None, new, init_from=path, preprocessing=Standardize(), progress=False)
    with pytest.raises(ConfigError, match="needs|give init_from"):
        fit(build(load_spec(dense_spec(4, 3))), new, old_test=new, progress=False)
    with pytest.raises(ConfigError, match="not the network of"):
        fit(build(load_spec(dense_spec(4, 5))), new, init_from=path, progress=False)


def test_a_subset_of_the_classes_is_matched_by_name(tmp_path):
    path, _ = _parent(tmp_path, "multiclass")
    x, y = multiclass_data(np.random.default_rng(4), 60)
    only_two = dataset_from_arrays(x[y > 0], y[y > 0], name="classes 1 and 2")  # labels ("1", "2"), indices 0, 1
    result = fit(None, only_two, test=only_two, init_from=path, epochs=3, learning_rate=0.01, progress=False)
    assert result.labels == ("0", "1", "2")
    assert result.evaluation["new_test"]["after"]["accuracy"] > 0.9  # class 1 stays class 1, not class 0


def test_a_checkpointed_continuation_resumes_bit_identical(tmp_path):
    path, _ = _parent(tmp_path, "multiclass")
    new = multiclass_data(np.random.default_rng(5), 256)

    class Crash(RuntimeError):
        pass

    class CrashAt:
        def on_step_end(self, state, logs):
            if state.step == 6:
                raise Crash

    options = dict(epochs=2, batch_size=64, learning_rate=0.01, progress=False, deterministic=True)
    reference = fit(None, new, init_from=path, **options)
    settings = CheckpointSettings(directory=str(tmp_path / "ck"), every_steps=4, asynchronous=False, durable=False)
    with pytest.raises(Crash):
        fit(None, new, init_from=path, checkpoint=settings, callbacks=[CrashAt()], **options)
    resumed = fit(None, new, init_from=path, checkpoint=settings, **options)
    assert resumed.resumed_from is not None
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

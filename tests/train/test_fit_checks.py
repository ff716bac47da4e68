"""What ``fit`` checks before the first step (issue 10: #2, #3, #16, #24): the data against the model, the loss
against both, and the settings — each a one-line typed error naming both sides, never a traceback deep inside a
step and never a run that trains nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modelkeep import ConfigError, DataError, fit, load, save
from modelkeep.data import dataset_from_arrays, load_dataset
from modelkeep.nn import build
from modelkeep.train.batches import input_dtype


def _dense(inputs, units, **input_fields):
    return build({"layers": [{"kind": "Input", "shape": [inputs], **input_fields},
                             {"kind": "Dense", "units": units}]}, seed=0)


def _tokens(vocab=10, seq=5):
    return build({"layers": [{"kind": "Input", "shape": [seq], "dtype": "int64"},
                             {"kind": "Embedding", "num_embeddings": vocab, "embedding_dim": 4},
                             {"kind": "GlobalAvgPool", "data_format": "channels_last"},
                             {"kind": "Dense", "units": 2}]}, seed=0)


def test_a_token_model_takes_int64_ids_and_trains():
    model = _tokens()
    assert input_dtype(model) == torch.int64 and input_dtype(_dense(3, 2)) == torch.float32
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 10, (20, 5)), rng.integers(0, 2, 20)
    result = fit(model, (x, y), (x, y), epochs=2, progress=False)
    assert np.isfinite(result.history.records[-1]["loss"])
    from modelkeep import evaluate
    from modelkeep.data import dataset_from_arrays

    assert np.isfinite(evaluate(model, dataset_from_arrays(x, y))["loss"])


def test_positions_in_messages_count_epochs_from_1_like_progress():
    from modelkeep.train.progress import describe_position

    assert describe_position(0, 8, 8) == "epoch 1, after batch 8 (step 8)"
    assert describe_position(1, 0, 20) == "the end of epoch 1 (step 20)"
    assert describe_position(0, 0, 0) == "the start of epoch 1 (step 0)"


@pytest.mark.parametrize("values, message", [
    (np.full((4, 5), 10), r"token ids range from 10 to 10, but this model's vocabulary takes ids in \[0, 10\)"),
    (np.full((4, 5), -1), r"range from -1"),
    (np.full((4, 5), 1.5), "fractional values"),
])
def test_token_ids_outside_the_vocabulary_are_refused_before_training(values, message):
    with pytest.raises(DataError, match=message):
        fit(_tokens(), (values, np.array([0, 1, 0, 1])), epochs=1, progress=False)


def test_categorical_crossentropy_on_real_valued_targets_is_refused():
    data = load_dataset("diabetes")
    with pytest.raises(ConfigError, match="'categorical_crossentropy' is for classes, but the targets of 'diabetes' "
                                          "are real values"):
        fit(_dense(10, 1), data, loss="categorical_crossentropy", epochs=1, progress=False)


def test_binary_crossentropy_on_three_classes_is_refused():
    with pytest.raises(ConfigError, match=r"'binary_crossentropy' is for two classes but 'iris' has 3 classes "
                                          r"\(setosa, versicolor, virginica\)"):
        fit(_dense(4, 3), load_dataset("iris"), loss="binary_crossentropy", epochs=1, progress=False)


def test_fewer_output_units_than_classes_is_refused():
    with pytest.raises(ConfigError, match="the model has 2 output units but 'iris' has 3 classes .* make the last "
                                          "layer 3 units wide"):
        fit(_dense(4, 2), load_dataset("iris"), epochs=1, progress=False)


def test_cross_entropy_over_one_unit_would_train_nothing_and_is_refused():
    data = load_dataset("breast_cancer")
    with pytest.raises(ConfigError, match="over one output unit is always 0"):
        fit(_dense(30, 1), data, loss="categorical_crossentropy", epochs=1, progress=False)
    fit(_dense(30, 1), data, loss="binary_crossentropy", epochs=1, progress=False)  # the right pairing trains


def test_a_wrong_input_width_is_refused_naming_both_shapes():
    with pytest.raises(DataError, match=r"samples of shape \[4\] but the model expects \[5\]"):
        fit(_dense(5, 3), load_dataset("iris"), epochs=1, progress=False)


def test_optimizer_options_torch_refuses_are_a_config_error():
    with pytest.raises(ConfigError, match=r"optimizer 'adam' refuses the options \{'betas': \[0.9\]\}.*Adam"):
        fit(_dense(4, 3), load_dataset("iris"), optimizer_options={"betas": [0.9]}, epochs=1, progress=False)


def test_batch_size_zero_is_an_error_and_full_still_means_full_batch():
    with pytest.raises(ConfigError, match="batch_size 0 is not a batch size.*'full'"):
        fit(_dense(4, 3), load_dataset("iris"), batch_size=0, epochs=1, progress=False)
    result = fit(_dense(4, 3), load_dataset("iris"), batch_size="full", epochs=1, progress=False)
    assert result.hyperparameters["batch_size"] == 150


def test_numpy_pairs_are_datasets_and_splits_share_the_training_classes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = np.array(["cat", "dog", "emu"] * 10)
    result = fit(_dense(4, 3), (x, y), (x[:6], y[:6]), (x[:3], np.array(["emu", "emu", "emu"])), epochs=1,
                 progress=False)
    assert result.labels == ("cat", "dog", "emu") and result.test_metrics is not None


def test_parameters_frozen_with_requires_grad_are_recorded_in_the_file(tmp_path):
    model = build({"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "name": "body", "units": 5},
                              {"kind": "Dense", "name": "head", "units": 3}]}, seed=0)
    for p in model.body.parameters() if hasattr(model, "body") else [p for n, p in model.named_parameters()
                                                                        if "body" in n]:
        p.requires_grad_(False)
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen
    result = fit(model, load_dataset("iris"), epochs=1, progress=False)
    loaded = load(save(result, tmp_path / "m.safetensors"))
    assert sorted(loaded.manifest.hyperparameters["frozen"]) == frozen


def test_a_model_of_the_users_own_class_is_checked_too():
    class TwoOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.dropout = torch.nn.Linear(4, 2), torch.nn.Dropout(0.5)

        def forward(self, x):
            return self.dropout(self.linear(x))

    model = TwoOutputs()
    with pytest.raises(ConfigError, match="the model has 2 output units but 'iris' has 3 classes"):
        fit(model, load_dataset("iris"), epochs=1, progress=False)
    assert model.training and model.dropout.training  # the probe put every mode back


def test_per_position_targets_that_do_not_fit_a_sequence_output_are_refused_before_training():
    from modelkeep import Dataset
    from modelkeep.zoo import ZOO

    spec = ZOO.get("gpt2").spec(vocab_size=30, context=6, d_model=8, n_head=2, n_layer=1)
    x = np.random.default_rng(0).integers(0, 30, (12, 6))
    vocabulary = tuple(str(i) for i in range(30))
    cases = [(x[:, :5], vocabulary, DataError, "5 positions per sample but the model gives 6"),
             (np.roll(x, -1, 1), vocabulary[:25], ConfigError, "names 25 classes but the model gives 30"),
             (np.full((12, 6), 30), vocabulary, DataError, "range from 30 to 30 but the model's classes are 0 to 29")]
    for y, labels, error, message in cases:
        with pytest.raises(error, match=message):
            fit(build(spec, seed=0), Dataset("tokens", x.astype(np.float32), y, labels), epochs=1, progress=False)

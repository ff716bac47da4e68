"""Every loss, optimizer and schedule trains a small model on real data and lowers the loss."""
from __future__ import annotations

import pytest
import torch

from modelkeep.data import Standardize, load_dataset, split_dataset
from modelkeep.errors import ConfigError
from modelkeep.nn import build
from modelkeep.train import LOSSES, OPTIMIZERS, SCHEDULES, fit, make_loss


def _mlp(inputs: int, outputs: int, final: str | None = None) -> dict:
    last = {"kind": "Dense", "units": outputs}
    if final:
        last["activation"] = final
    return {"layers": [{"kind": "Input", "shape": [inputs]}, {"kind": "Dense", "units": 16, "activation": "relu"}, last]}


@pytest.fixture(scope="module")
def wine():
    return split_dataset(load_dataset("wine"), seed=0)


@pytest.fixture(scope="module")
def cancer():
    return split_dataset(load_dataset("breast_cancer"), seed=0)


@pytest.fixture(scope="module")
def diabetes():
    return split_dataset(load_dataset("diabetes"), seed=0)


CASES = {
    "categorical_crossentropy": ("wine", 3, None, {"label_smoothing": 0.1}),
    "binary_crossentropy": ("cancer", 1, None, {"label_smoothing": 0.05}),
    "mse": ("diabetes", 1, None, {}),
    "rmse": ("diabetes", 1, None, {}),
    "mae": ("diabetes", 1, None, {}),
    "huber": ("diabetes", 1, None, {"delta": 50.0}),
}


def test_every_registered_loss_has_a_case():
    assert set(LOSSES.names()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_loss_lowers_the_loss(name, request):
    data, outputs, final, options = CASES[name]
    splits = request.getfixturevalue(data)
    model = build(_mlp(splits.train.input_shape[0], outputs, final), seed=0)
    lr = 0.05 if data == "diabetes" else 0.01
    result = fit(model, splits.train, splits.validation, loss=name, loss_options=options, learning_rate=lr,
                 epochs=4, batch_size=16, preprocessing=Standardize(), progress=False)
    losses = result.history["loss"]
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("final", [None, "softmax"])
def test_cross_entropy_from_probabilities_matches_logits(final):
    logits = torch.randn(8, 4, dtype=torch.float64)
    target = torch.randint(0, 4, (8,))
    from_logits = make_loss("categorical_crossentropy", None, label_smoothing=0.1)(logits, target)
    probs = torch.softmax(logits, dim=1)
    from_probs = make_loss("categorical_crossentropy", "softmax", label_smoothing=0.1)(probs, target)
    assert torch.allclose(from_logits, from_probs)
    onehot = torch.nn.functional.one_hot(target, 4).double()
    assert torch.allclose(make_loss("categorical_crossentropy", final)(probs if final else logits, onehot),
                          make_loss("categorical_crossentropy", final)(probs if final else logits, target))


def test_binary_crossentropy_from_sigmoid_matches_logits():
    logits = torch.randn(10, 1, dtype=torch.float64)
    target = torch.randint(0, 2, (10,))
    a = make_loss("binary_crossentropy", None)(logits, target)
    b = make_loss("binary_crossentropy", "sigmoid")(torch.sigmoid(logits), target)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_lowers_the_loss(name, wine):
    model = build(_mlp(13, 3), seed=0)
    lr = 0.05 if name in ("sgd", "momentum", "nesterov") else 0.01
    result = fit(model, wine.train, loss="categorical_crossentropy", optimizer=name, learning_rate=lr,
                 weight_decay=1e-4, epochs=3, batch_size=16, preprocessing=Standardize(), progress=False)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.optimizer.param_groups[0]["weight_decay"] == 1e-4


@pytest.mark.parametrize("name", [n for n in SCHEDULES.names() if n != "constant"])
def test_each_schedule_lowers_the_loss_and_moves_the_learning_rate(name, wine):
    options = {"type": name}
    if name == "step":
        options["step_size"] = 2
    if name == "reduce_on_plateau":
        options.update(patience=0, factor=0.5, monitor="val_accuracy")
    model = build(_mlp(13, 3), seed=0)
    result = fit(model, wine.train, wine.validation, learning_rate=0.01, schedule=options, epochs=5,
                 batch_size=16, preprocessing=Standardize(), progress=False)
    assert result.history["loss"][-1] < result.history["loss"][0]
    lrs = result.history["lr"]
    if name == "warmup":
        assert lrs[0] == pytest.approx(0.01)  # warm-up (one epoch) is over by the end of epoch 1
    else:
        assert min(lrs) < 0.01 * 0.99, lrs


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'huber'"):
        make_loss("hubber")
    with pytest.raises(ConfigError, match="label_smoothing"):
        make_loss("categorical_crossentropy", label_smoothing=1.5)

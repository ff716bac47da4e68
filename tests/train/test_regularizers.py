"""The regularizer seam: ``total_penalty`` and ``L2Toward`` (the L2-SP penalty ``alpha/2 · Σ‖w − w₀‖²``)."""
from __future__ import annotations

import pytest
import torch

from modelkeep.errors import ConfigError
from modelkeep.train.regularizers import L2Toward, Regularizer, total_penalty


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_penalty_is_zero_at_the_reference_and_its_gradient_is_alpha_times_the_distance():
    model = _model()
    l2sp = L2Toward(model.state_dict(), alpha=0.3)
    assert l2sp.penalty(model).item() == 0.0
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    penalty = l2sp.penalty(model)
    expected = 0.3 / 2 * sum(((p - reference[n]) ** 2).sum() for n, p in model.named_parameters())
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 0.3 * (p.detach() - reference[name]))


def test_the_reference_is_a_copy_not_the_live_weights():
    model = _model()
    l2sp = L2Toward(model.state_dict(), alpha=1.0)  # state_dict() shares storage with the parameters
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert l2sp.penalty(model).item() == pytest.approx(0.5 * model[0].weight.numel())


def test_names_select_parameters_and_new_or_frozen_ones_are_not_pulled():
    model = _model()
    reference = {k: v for k, v in model.state_dict().items() if not k.startswith("2.")}  # "2" is a new head
    l2sp = L2Toward(reference, alpha=2.0, names=["0.*"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert l2sp.penalty(model).item() == pytest.approx(12 + 4)  # 0.weight (12) + 0.bias (4), alpha/2 = 1
    model[0].bias.requires_grad_(False)
    assert l2sp.penalty(model).item() == pytest.approx(12)
    model[0].requires_grad_(False)
    assert l2sp.penalty(model).item() == 0.0
    assert L2Toward(reference, alpha=2.0).penalty(model).item() == 0.0  # the head has no reference


def test_mistakes_are_refused_with_a_way_out():
    model = _model()
    with pytest.raises(ConfigError, match="alpha"):
        L2Toward(model.state_dict(), alpha=-1)
    with pytest.raises(ConfigError, match="no parameter of the model"):
        L2Toward(model.state_dict(), alpha=1, names="encoder.*").penalty(model)
    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with pytest.raises(ConfigError, match="has shape .* leave it out with names"):
        L2Toward(other.state_dict(), alpha=1).penalty(model)


def test_state_survives_resume_and_refuses_other_reference_weights():
    model = _model()
    original = L2Toward(model.state_dict(), alpha=0.1, names=["0.*"])
    original.alpha = 0.05  # e.g. annealed by a callback during the run
    state = original.state_dict()
    assert set(state) == {"alpha", "names", "reference_sha256"}  # w0 itself is not stored again
    resumed = L2Toward(model.state_dict(), alpha=0.1, names=["0.*"])
    resumed.load_state_dict(state)
    assert resumed.alpha == 0.05
    other = _model()
    with torch.no_grad():
        other[0].weight.add_(1e-3)
    with pytest.raises(ConfigError, match="reference weights differ"):
        L2Toward(other.state_dict(), alpha=0.1, names=["0.*"]).load_state_dict(state)
    with pytest.raises(ConfigError, match="same names"):
        L2Toward(model.state_dict(), alpha=0.1).load_state_dict(state)


def test_total_penalty_sums_and_is_none_without_regularizers():
    model = _model()
    assert total_penalty([], model) is None

    class Constant:
        def __init__(self, value):
            self.value = value

        def penalty(self, model):
            return torch.tensor(self.value)

        def state_dict(self):
            return {"value": self.value}

        def load_state_dict(self, state):
            self.value = state["value"]

    assert isinstance(Constant(1.0), Regularizer)
    assert total_penalty([Constant(1.5), Constant(2.0)], model).item() == 3.5


def test_training_with_the_penalty_stays_closer_to_the_reference():
    def train(alpha):
        model = _model()
        reference = {k: v.clone() for k, v in model.state_dict().items()}
        regularizers = [L2Toward(reference, alpha=alpha)] if alpha else []
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(32, 3, generator=torch.Generator().manual_seed(1)), torch.zeros(32, 2)
        for _ in range(20):
            loss = torch.nn.functional.mse_loss(model(x), y + 5.0)
            penalty = total_penalty(regularizers, model)
            if penalty is not None:
                loss = loss + penalty
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return sum(((p - reference[n]) ** 2).sum().item() for n, p in model.named_parameters())

    assert train(alpha=1.0) < train(alpha=0.0)

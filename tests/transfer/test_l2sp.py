"""L2-SP: zero at w₀, gradient alpha·(w − w₀) on pretrained weights and beta·w on new ones; w₀ from the base file,
never stored again (the state holds the base's content hash and a fingerprint)."""
from __future__ import annotations

import pytest
import torch

from modelkeep import ConfigError
from modelkeep.artifact import load
from modelkeep.nn import build
from modelkeep.transfer import L2SP, as_transferable, finetune
from transfer_helpers import BASE_SPEC, QUICK, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _perturbed(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator))


def test_penalty_is_zero_at_w0_and_its_gradient_is_alpha_times_the_distance():
    model = build(BASE_SPEC, seed=0)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    as_transferable(model).replace_head(5, seed=0)
    new = ["layers.out.weight", "layers.out.bias"]
    reference = {n: t for n, t in w0.items() if n not in new}
    penalty = L2SP(reference, alpha=0.3, beta=0.05, new=new)
    with torch.no_grad():
        for name in new:
            dict(model.named_parameters())[name].zero_()
    value = penalty.penalty(model)
    assert value.item() == 0.0  # at w₀, with the new head at zero
    _perturbed(model)
    model.zero_grad()
    penalty.penalty(model).backward()
    for name, p in model.named_parameters():
        expected = 0.05 * p.detach() if name in new else 0.3 * (p.detach() - w0[name])
        torch.testing.assert_close(p.grad, expected, rtol=1e-6, atol=1e-7)
    expected_value = sum(0.15 * (p.detach() - w0[n]).pow(2).sum() for n, p in model.named_parameters()
                         if n not in new) + sum(0.025 * p.detach().pow(2).sum() for n, p in model.named_parameters()
                                                if n in new)
    torch.testing.assert_close(penalty.penalty(model).detach(), expected_value)


def test_frozen_parameters_cost_nothing_and_the_state_holds_no_weights():
    model = build(BASE_SPEC, seed=0)
    penalty = L2SP(model.state_dict(), alpha=1.0, base="xxh3-128:abc")
    _perturbed(model)
    model.requires_grad_(False)
    assert penalty.penalty(model).item() == 0.0
    state = penalty.state_dict()
    assert not any(isinstance(v, torch.Tensor) for v in state.values())
    assert state["base"] == "xxh3-128:abc" and len(state["reference_sha256"]) == 64


def test_a_resume_from_another_base_or_other_strengths_is_refused():
    model = build(BASE_SPEC, seed=0)
    saved = L2SP(model.state_dict(), alpha=0.1, base="xxh3-128:aaa").state_dict()
    with pytest.raises(ConfigError, match="another base"):
        L2SP(build(BASE_SPEC, seed=1).state_dict(), alpha=0.1, base="xxh3-128:bbb").load_state_dict(saved)
    with pytest.raises(ConfigError, match="alpha=0.1"):
        L2SP(model.state_dict(), alpha=0.2, base="xxh3-128:aaa").load_state_dict(saved)
    L2SP(model.state_dict(), alpha=0.1, base="xxh3-128:aaa").load_state_dict(saved)


def test_finetune_pulls_toward_the_base_file_weights(iris, base_file):
    w0 = snapshot(load(base_file).module)

    def distance(model):
        return sum(float((p.detach() - w0[n]).pow(2).sum()) for n, p in model.named_parameters()
                   if not n.startswith("layers.out."))

    options = dict(head=3, epochs=3, batch_size=16, learning_rate=0.05, progress=False)
    free = finetune(base_file, iris.train, **options)
    pulled = finetune(base_file, iris.train, l2sp={"alpha": 5.0, "beta": 0.01}, **options)
    assert distance(pulled.model) < 0.5 * distance(free.model)
    assert pulled.hyperparameters["regularizers"] == ["L2SP"]
    assert pulled.lineage["transfer"]["l2sp"] == {"alpha": 5.0, "beta": 0.01}
    # the training loss includes the penalty; validation would not
    assert pulled.history["loss"][0] >= free.history["loss"][0] - 1e-6


def test_l2sp_of_zero_is_plain_fine_tuning(iris, base_file):
    a = finetune(base_file, iris.train, head=3, **QUICK)
    b = finetune(base_file, iris.train, head=3, l2sp=0.0, **QUICK)
    assert b.transfer["l2sp"] is None and "regularizers" not in b.hyperparameters
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name

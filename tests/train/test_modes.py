"""Mode policies: a frozen BatchNorm keeps its running statistics across train/eval switches."""
from __future__ import annotations

import pytest
import torch

from modelkeep.errors import ConfigError
from modelkeep.train.modes import FrozenBatchNorm, KeepEval, ModePolicy, keep_user_eval, set_mode


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
                               torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))


def _statistics(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in module.named_buffers()}


def _train_validate_train(model, policies):
    """set_mode(train), batches; set_mode(eval), a validation batch; set_mode(train), batches."""
    generator = torch.Generator().manual_seed(1)
    set_mode(model, True, policies)
    for _ in range(3):
        model(torch.randn(16, 3, generator=generator) * 3 + 1)
    set_mode(model, False, policies)
    with torch.no_grad():
        model(torch.randn(16, 3, generator=generator))
    set_mode(model, True, policies)
    for _ in range(3):
        model(torch.randn(16, 3, generator=generator) * 3 + 1)


@pytest.mark.parametrize("policy", [FrozenBatchNorm(["1"]), KeepEval(["1"]), "recorded"])
def test_a_frozen_batchnorm_keeps_its_statistics_across_mode_switches(policy):
    model = _model()
    model[1].requires_grad_(False)
    if policy == "recorded":
        model[1].eval()  # what the user did before fit; the loop records it at fit start
        policy = keep_user_eval(model)
    frozen, free = _statistics(model[1]), _statistics(model[4])
    _train_validate_train(model, [policy])
    for name, value in _statistics(model[1]).items():
        assert torch.equal(value, frozen[name]), name
    assert not torch.equal(_statistics(model[4])["running_mean"], free["running_mean"])
    assert model.training and model[4].training and not model[1].training


def test_without_a_policy_train_undoes_the_users_eval_which_is_the_trap():
    model = _model()
    model[1].requires_grad_(False).eval()
    before = _statistics(model[1])
    _train_validate_train(model, [])
    assert not torch.equal(_statistics(model[1])["running_mean"], before["running_mean"])


def test_evaluation_mode_puts_everything_in_eval():
    model = _model()
    set_mode(model, False, [FrozenBatchNorm()])
    assert not any(m.training for m in model.modules())
    set_mode(model, True, [FrozenBatchNorm()])
    assert model.training and model[0].training
    assert not model[1].training and not model[4].training


def test_keep_user_eval_records_only_frozen_modules_the_user_put_in_eval():
    model = _model()
    model.eval()  # a model merely loaded in eval mode: nothing is frozen, so nothing is kept
    assert keep_user_eval(model).names == frozenset()
    model[4].requires_grad_(False)
    model.train()
    assert keep_user_eval(model).names == frozenset()  # frozen but in training mode: statistics move
    model[4].eval()
    dropout = torch.nn.Sequential(torch.nn.Dropout(0.5)).eval()
    assert keep_user_eval(model).names == {"4"}
    assert keep_user_eval(dropout).names == frozenset()


def test_a_pattern_that_matches_nothing_is_refused_and_state_round_trips():
    model = _model()
    with pytest.raises(ConfigError, match="pattern 'backbone.\\*' matches no module"):
        set_mode(model, True, [FrozenBatchNorm("backbone.*")])
    set_mode(torch.nn.Linear(2, 2), True, [FrozenBatchNorm()])  # every BatchNorm of none: fine
    policy = KeepEval(["1"], names=["4"])
    copy = KeepEval()
    copy.load_state_dict(policy.state_dict())
    assert (copy.patterns, copy.names) == (("1",), frozenset({"4"}))
    assert isinstance(copy, ModePolicy)

"""Parameter-group rules: resolution into optimizer groups, make_optimizer, unfreezing later, and resume."""
from __future__ import annotations

import copy

import pytest
import torch

from modelkeep.errors import ConfigError
from modelkeep.train.optimizers import make_optimizer
from modelkeep.train.param_groups import (GroupRule, ParameterGroups, discriminative_rules, resolve_groups,
                                          top_level_layers)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4), torch.nn.Tanh(),
                               torch.nn.Linear(4, 2))


def _step(model, optimizer, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 3, generator=generator), torch.randn(8, 2, generator=generator)
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()


def _names(groups, model):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [[by_id[id(p)] for p in g["params"]] for g in groups]


def test_rules_resolve_first_match_wins_then_a_default_group():
    model = _model()
    rules = [GroupRule("4.*", lr_scale=10.0, weight_decay=0.0), GroupRule(layers=(0, 3), lr_scale=0.1),
             GroupRule("0.weight", lr_scale=5.0)]  # shadowed by the layer rule: still a valid rule
    groups = resolve_groups(model, rules, learning_rate=0.01, weight_decay=1e-4)
    assert _names(groups, model) == [["4.weight", "4.bias"], ["0.weight", "0.bias", "2.weight", "2.bias"]]
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.001])
    assert [g["weight_decay"] for g in groups] == [0.0, 1e-4]
    optimizer = make_optimizer("adamw", groups, 0.01)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 0.001])


def test_unmatched_parameters_form_the_last_group_and_frozen_rules_freeze():
    model = _model()
    groups = ParameterGroups(model, [GroupRule(layers=(0, 1), frozen=True)], learning_rate=0.1)
    assert groups.frozen_names() == ["0.weight", "0.bias"]
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert _names(groups.param_groups(), model) == [["2.weight", "2.bias", "4.weight", "4.bias"]]
    rows = {row["name"]: row for row in groups.describe()}
    assert rows["0.weight"]["frozen"] and rows["0.weight"]["group"] is None
    assert rows["4.bias"] == {"name": "4.bias", "group": 0, "lr": 0.1, "weight_decay": None, "frozen": False}


def test_parameters_frozen_by_the_user_are_held_out_not_lost():
    model = _model()
    model[2].requires_grad_(False)
    groups = ParameterGroups(model, [GroupRule("2.*", lr_scale=0.5)], learning_rate=0.1)
    assert groups.frozen_names() == ["2.weight", "2.bias"]
    optimizer = make_optimizer("sgd", groups.param_groups(), 0.1)
    added = groups.add_to(optimizer, "2.*")
    assert added[0]["lr"] == pytest.approx(0.05)  # joins with the settings of its rule


def test_add_to_keeps_the_state_of_parameters_already_training_and_new_ones_train():
    model = _model()
    groups = ParameterGroups(model, [GroupRule(layers=(0, 3), frozen=True, lr_scale=0.1)], learning_rate=0.01)
    optimizer = make_optimizer("adam", groups.param_groups(), 0.01)
    for seed in range(3):
        _step(model, optimizer, seed)
    before = {k: {n: t.clone() for n, t in v.items()} for k, v in optimizer.state_dict()["state"].items()}
    frozen_before = model[0].weight.detach().clone()
    added = groups.add_to(optimizer, [model[0].weight, model[0].bias])
    assert len(added) == 1 and added[0]["lr"] == pytest.approx(0.001) and added[0]["initial_lr"] == added[0]["lr"]
    assert model[0].weight.requires_grad and groups.frozen_names() == ["2.weight", "2.bias"]
    after = optimizer.state_dict()["state"]
    for key, state in before.items():
        for name, tensor in state.items():
            torch.testing.assert_close(after[key][name], tensor, rtol=0, atol=0)
    _step(model, optimizer, 3)
    assert not torch.equal(model[0].weight, frozen_before)
    assert optimizer.state[model[0].weight]["step"].item() == 1
    assert model[2].weight.grad is None  # still frozen
    assert groups.add_to(optimizer, "0.*") == []  # already training: nothing to add
    added = groups.add_to(optimizer, "2.weight", rule=GroupRule("*", lr_scale=2.0))
    assert added[0]["lr"] == pytest.approx(0.02)


def test_a_resumed_run_rebuilds_identical_groups_and_takes_the_optimizer_state():
    rules = [GroupRule(layers=(0, 1), frozen=True, lr_scale=0.1), GroupRule("2.*", frozen=True, lr_scale=0.5),
             GroupRule("4.*", weight_decay=0.01)]
    model = _model()
    groups = ParameterGroups(model, rules, learning_rate=0.01)
    optimizer = make_optimizer("adamw", groups.param_groups(), 0.01)
    _step(model, optimizer, 0)
    groups.add_to(optimizer, "2.*")
    _step(model, optimizer, 1)
    # deep copies, as a checkpoint holds: optimizer.state_dict() shares the live moment tensors
    saved_groups, saved_optimizer = copy.deepcopy(groups.state_dict()), copy.deepcopy(optimizer.state_dict())
    saved_weights = {k: v.clone() for k, v in model.state_dict().items()}

    for build_first in (False, True):  # restore the groups then build, or build then add the missing ones
        fresh = _model()
        fresh.load_state_dict(saved_weights)
        restored = ParameterGroups(fresh, rules, learning_rate=0.01)
        if build_first:
            resumed = make_optimizer("adamw", restored.param_groups(), 0.01)
            restored.load_state_dict(saved_groups)
            restored.add_missing_to(resumed)
        else:
            restored.load_state_dict(saved_groups)
            resumed = make_optimizer("adamw", restored.param_groups(), 0.01)
        assert _names(resumed.param_groups, fresh) == _names(optimizer.param_groups, model)
        assert restored.state_dict() == saved_groups
        assert fresh[2].weight.requires_grad and not fresh[0].weight.requires_grad
        resumed.load_state_dict(copy.deepcopy(saved_optimizer))  # load_state_dict keeps the tensors it gets
        assert resumed.state_dict()["param_groups"] == saved_optimizer["param_groups"]
        _step(fresh, resumed, 2)
        if not build_first:
            _step(model, optimizer, 2)
            expected = {k: v.clone() for k, v in model.state_dict().items()}
        for name, tensor in fresh.state_dict().items():
            torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


def test_make_optimizer_keeps_its_flat_behaviour_and_refuses_mistakes():
    model = _model()
    model[0].requires_grad_(False)
    optimizer = make_optimizer("momentum", model.parameters(), 0.1, weight_decay=1e-4)
    assert len(optimizer.param_groups) == 1 and len(optimizer.param_groups[0]["params"]) == 4
    assert optimizer.param_groups[0]["momentum"] == 0.9
    grouped = make_optimizer("sgd", [{"params": model[0].parameters()}, {"params": model[4].parameters(), "lr": 1.0}],
                             0.1)
    assert [len(g["params"]) for g in grouped.param_groups] == [0, 2]  # frozen left out; indices kept
    assert [g["lr"] for g in grouped.param_groups] == [0.1, 1.0]
    with pytest.raises(ConfigError, match="no trainable parameters"):
        make_optimizer("sgd", model[0].parameters(), 0.1)
    with pytest.raises(ConfigError, match="not a mix"):
        make_optimizer("sgd", [model[2].weight, {"params": [model[4].weight]}], 0.1)
    with pytest.raises(ConfigError, match="repeats a parameter"):
        make_optimizer("sgd", [{"params": [model[4].weight]}, {"params": [model[4].weight]}], 0.1)
    with pytest.raises(ConfigError, match="learning rate"):
        make_optimizer("sgd", [{"params": [model[4].weight], "lr": -1}], 0.1)
    with pytest.raises(ConfigError, match="unknown optimizer 'adm'; did you mean 'adam'"):
        make_optimizer("adm", model.parameters(), 0.1)


def test_rules_and_add_to_refuse_mistakes():
    model = _model()
    with pytest.raises(ConfigError, match="exactly one"):
        GroupRule()
    with pytest.raises(ConfigError, match="lr_scale"):
        GroupRule("*", lr_scale=0)
    with pytest.raises(ConfigError, match=r"rule 0 \(pattern 'encoder.\*'\) matches no parameter"):
        ParameterGroups(model, [GroupRule("encoder.*")], learning_rate=0.1)
    with pytest.raises(ConfigError, match="matches no parameter"):
        ParameterGroups(model, [GroupRule(layers=(7, 9))], learning_rate=0.1)
    groups = ParameterGroups(model, [GroupRule("0.*", frozen=True)], learning_rate=0.1)
    with pytest.raises(ConfigError, match="not built from these parameter groups"):
        groups.add_to(torch.optim.SGD(model[4].parameters(), lr=0.1), "0.*")
    optimizer = make_optimizer("sgd", groups.param_groups(), 0.1)
    with pytest.raises(ConfigError, match="matches no parameter name"):
        groups.add_to(optimizer, "encoder.*")
    with pytest.raises(ConfigError, match="frozen=True"):
        groups.add_to(optimizer, "0.*", rule=GroupRule("*", frozen=True))
    with pytest.raises(ConfigError, match="do not fit this model"):
        ParameterGroups(torch.nn.Linear(2, 2), learning_rate=0.1).load_state_dict(groups.state_dict())
    unfrozen = ParameterGroups(_model(), learning_rate=0.1)  # a resume that forgot the freezing rule
    resumed = make_optimizer("sgd", unfrozen.param_groups(), 0.1)
    unfrozen.load_state_dict(groups.state_dict())
    with pytest.raises(ConfigError, match="same group rules and the same frozen parameters"):
        unfrozen.add_missing_to(resumed)


def test_top_level_layers_of_sequential_wrapped_and_spec_built_models():
    model = _model()
    assert [name for name, _ in top_level_layers(model)] == ["0", "1", "2", "3", "4"]

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _model()

    assert [name for name, _ in top_level_layers(Wrapper())][:2] == ["body.0", "body.1"]
    assert top_level_layers(torch.nn.Linear(2, 2))[0][0] == ""
    layers = top_level_layers(_spec_model())
    assert all(name.startswith("layers.") for name, _ in layers) and len(layers) > 1


def _spec_model() -> torch.nn.Module:
    class Spec(torch.nn.Module):  # the shape of nn.build.SpecModule: one ModuleDict of named layers
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleDict({"conv": torch.nn.Conv2d(1, 2, 3), "act": torch.nn.ReLU(),
                                               "head": torch.nn.Linear(2, 3)})

    return Spec()


def test_discriminative_rules_decay_from_the_head_and_reach_the_optimizer():
    model = _model()
    rules = discriminative_rules(model, 0.5)
    assert [(r.layers, r.lr_scale) for r in rules] == [((0, 1), 0.25), ((2, 3), 0.5), ((4, 5), 1.0)]
    optimizer = make_optimizer("sgd", resolve_groups(model, rules, learning_rate=0.08), 0.08)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.02, 0.04, 0.08])
    assert [(r.layers, r.lr_scale) for r in discriminative_rules(_spec_model(), 0.1)] == [((0, 1), 0.1),
                                                                                          ((2, 3), 1.0)]
    with pytest.raises(ConfigError, match="decay"):
        discriminative_rules(model, 0)


def test_discriminative_rules_over_a_spec_built_model_by_layer_or_by_block():
    from modelkeep.nn import build
    from modelkeep.zoo import get_spec

    model = build(get_spec("lenet5"))
    layers = [name for name, _ in top_level_layers(model)]
    assert layers[-1] == "layers.output" and all(name.startswith("layers.") for name in layers)
    groups = resolve_groups(model, discriminative_rules(model, 0.5), learning_rate=1.0)
    assert [g["lr"] for g in groups] == [0.0625, 0.125, 0.25, 0.5, 1.0]
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert {by_id[id(p)] for p in groups[-1]["params"]} == {"layers.output.weight", "layers.output.bias"}
    blocks = [["layers.c1.*", "layers.c3.*"], "layers.c5.*", ["layers.f6.*", "layers.output.*"]]
    groups = resolve_groups(model, discriminative_rules(model, 0.1, blocks=blocks), learning_rate=1.0)
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.01, 0.1, 1.0, 1.0])

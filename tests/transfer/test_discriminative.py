"""Discriminative learning rates reach the optimizer as configured: lr·alpha^(L−l) from the head down, explicit
groups first (first match wins), and the updates follow the rates."""
from __future__ import annotations

import pytest
import torch

from modelkeep.artifact import load
from modelkeep.transfer import finetune
from transfer_helpers import QUICK, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rates(result):
    names = {id(p): n for n, p in result.model.named_parameters()}
    return {names[id(p)]: group["lr"] for group in result.optimizer.param_groups for p in group["params"]}


def test_each_layer_gets_lr_times_alpha_to_its_distance_from_the_head(iris, base_file):
    result = finetune(base_file, iris.train, head=3, discriminative=0.5, learning_rate=0.01, **QUICK)
    rates = _rates(result)
    expected = {"hidden": 0.01 * 0.5 ** 3, "bn": 0.01 * 0.5 ** 2, "mid": 0.01 * 0.5, "out": 0.01}
    for name, rate in rates.items():
        assert rate == pytest.approx(expected[name.split(".")[1]]), name
    assert len(rates) == 8
    assert result.lineage["learning_rates"] == pytest.approx(expected)
    recorded = result.hyperparameters["param_groups"]  # layer 0 is the Input, which has no parameters
    assert [(tuple(r["layers"]), r["lr_scale"]) for r in recorded] == [((1, 2), 0.125), ((2, 3), 0.25),
                                                                        ((3, 4), 0.5), ((4, 5), 1.0)]


def test_explicit_groups_come_first_and_can_freeze(iris, base_file):
    before = snapshot(load(base_file).module)
    result = finetune(base_file, iris.train, head=3, learning_rate=0.01, discriminative=0.5,
                      groups=[{"pattern": "layers.bn.*", "lr_scale": 3.0}, {"pattern": "layers.hidden.*",
                                                                             "frozen": True}], **QUICK)
    rates = _rates(result)
    assert rates["layers.bn.weight"] == pytest.approx(0.03) and rates["layers.mid.0.weight"] == pytest.approx(0.005)
    assert "layers.hidden.0.weight" not in rates
    assert torch.equal(before["layers.hidden.0.weight"], result.model.state_dict()["layers.hidden.0.weight"])


def test_a_smaller_rate_moves_a_layer_less(iris, base_file):
    """With SGD the update is proportional to the rate: the input layer, at 1/1000 of the head's rate, moves about
    a thousandth of what it moves at the full rate."""
    before = snapshot(load(base_file).module)
    options = dict(head=3, learning_rate=0.1, optimizer="sgd", **QUICK)
    plain = finetune(base_file, iris.train, **options).model.state_dict()
    decayed = finetune(base_file, iris.train, discriminative=0.1, **options).model.state_dict()

    def moved(after, name):
        return float((after[name] - before[name]).abs().max())

    ratio = moved(decayed, "layers.hidden.0.weight") / moved(plain, "layers.hidden.0.weight")
    assert 1e-4 < ratio < 1e-2

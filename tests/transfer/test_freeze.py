"""Frozen layers are bit-identical after training — weights and BatchNorm statistics — while the rest trains;
a linear probe trains the head alone first, then the rest."""
from __future__ import annotations

import pytest
import torch

from modelkeep.artifact import load
from modelkeep.transfer import finetune
from transfer_helpers import QUICK, changed, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_feature_extraction_leaves_every_frozen_tensor_bit_identical(iris, base_file):
    before = snapshot(load(base_file).module)
    result = finetune(base_file, iris.train, iris.validation, head=3, freeze="all_but_head", learning_rate=0.05,
                      **QUICK)
    frozen = [name for name in before if not name.startswith("layers.out.")]
    assert any(name.startswith("layers.bn.running_") for name in frozen)
    for name in frozen:  # weights and BatchNorm buffers alike, validation after every epoch notwithstanding
        assert torch.equal(before[name], result.model.state_dict()[name]), name
    assert not any(p.requires_grad for n, p in result.model.named_parameters() if not n.startswith("layers.out."))
    assert result.hyperparameters["frozen"] == [n for n, _ in result.model.named_parameters()
                                                if not n.startswith("layers.out.")]
    optimized = {id(p) for group in result.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in result.model.layers.out.parameters()}


def test_frozen_selected_layers_stay_and_the_others_train(iris, base_file):
    before = snapshot(load(base_file).module)
    result = finetune(base_file, iris.train, freeze=[0, "bn"], learning_rate=0.05, **QUICK)
    moved = changed(before, result.model)
    assert not any(name.startswith(("layers.hidden.", "layers.bn.")) for name in moved)
    assert {"layers.mid.0.weight", "layers.out.weight"} <= moved


def test_full_fine_tuning_moves_every_layer_and_the_batchnorm_statistics(iris, base_file):
    before = snapshot(load(base_file).module)
    result = finetune(base_file, iris.train, learning_rate=0.05, **QUICK)
    assert {"layers.hidden.0.weight", "layers.bn.weight", "layers.bn.running_mean", "layers.mid.0.weight",
            "layers.out.weight"} <= changed(before, result.model)


class Snapshots:
    """The model's tensors at the end of every epoch."""

    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, state, logs):
        self.epochs.append(snapshot(state.model))


def test_linear_probe_then_fine_tune(iris, base_file):
    before = snapshot(load(base_file).module)
    spy = Snapshots()
    result = finetune(base_file, iris.train, iris.validation, head=3, probe_epochs=2, epochs=4, batch_size=16,
                      learning_rate=0.05, progress=False, callbacks=[spy])
    backbone = [name for name in before if not name.startswith("layers.out.")]
    for epoch in (0, 1):  # the probe: the head alone
        for name in backbone:
            assert torch.equal(spy.epochs[epoch][name], before[name]), (epoch, name)
    assert {"layers.hidden.0.weight", "layers.bn.running_mean", "layers.mid.0.weight"} <= changed(before, result.model)
    assert len(result.optimizer.param_groups) == 2  # the backbone joined as a group of its own
    assert result.lineage["trained_layers"] == ["hidden", "bn", "mid", "out"]
    assert result.hyperparameters.get("frozen") is None


def test_probe_with_freeze_keeps_the_frozen_layers_out_for_good(iris, base_file):
    before = snapshot(load(base_file).module)
    result = finetune(base_file, iris.train, head=3, probe_epochs=1, freeze=["hidden"], epochs=2, batch_size=16,
                      learning_rate=0.05, progress=False)
    for name in ("layers.hidden.0.weight", "layers.hidden.0.bias"):
        assert torch.equal(before[name], result.model.state_dict()[name])
    assert "layers.mid.0.weight" in changed(before, result.model)
    assert result.lineage["frozen_layers"] == ["hidden"]

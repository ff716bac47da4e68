"""Gradual unfreezing: one more block, from the head towards the input, every N epochs; newly unfrozen parameters
join the optimizer (their own group, their own state) and receive updates from then on."""
from __future__ import annotations

import pytest
import torch

from modelkeep.artifact import load
from modelkeep.transfer import finetune
from modelkeep.transfer.schedule import plan_stages
from modelkeep.transfer.selectors import Layer
from transfer_helpers import snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Watch:
    """The tensors at every epoch end."""

    def __init__(self):
        self.tensors = []

    def on_epoch_end(self, state, logs):
        self.tensors.append(snapshot(state.model))


def test_plan_stages_goes_from_the_head_towards_the_input():
    layers = [Layer("layers.a", ["layers.a.w"]), Layer("layers.b", ["layers.b.w"]), Layer("layers.c", ["layers.c.w"]),
              Layer("layers.head", ["layers.head.w"])]
    stages = plan_stages(layers, 3, set(), probe_epochs=0, unfreeze_every=2)
    assert [(s.epoch, s.layers) for s in stages] == [(2, ("layers.c",)), (4, ("layers.b",)), (6, ("layers.a",))]
    stages = plan_stages(layers, 3, {"layers.b.w"}, probe_epochs=3, unfreeze_every=1)
    assert [(s.epoch, s.layers) for s in stages] == [(3, ("layers.c",)), (5, ("layers.a",))]
    stages = plan_stages(layers, 3, {"layers.a.w"}, probe_epochs=2, unfreeze_every=None)
    assert [(s.epoch, s.layers) for s in stages] == [(2, ("layers.c", "layers.b"))]


def test_one_more_layer_every_epoch_joins_the_optimizer_and_trains(iris, base_file):
    before = snapshot(load(base_file).module)
    watch = Watch()
    result = finetune(base_file, iris.train, iris.validation, head=3, unfreeze_every=1, epochs=4, batch_size=16,
                      learning_rate=0.05, progress=False, callbacks=[watch])
    order = ["layers.out.", "layers.mid.", "layers.bn.", "layers.hidden."]  # the head first, the input last
    for epoch in range(4):
        for name, value in watch.tensors[epoch].items():
            if name.startswith("layers.out.") or "num_batches" in name:
                continue
            moved = not torch.equal(value, before[name])
            assert moved == name.startswith(tuple(order[1:epoch + 1])), (epoch, name)  # BatchNorm statistics too
    groups = result.optimizer.param_groups
    assert [len(group["params"]) for group in groups] == [2, 2, 2, 2]
    names = {id(p): n for n, p in result.model.named_parameters()}
    steps_per_epoch = 8  # 120 samples in batches of 16
    for index, group in enumerate(groups):  # each joined with fresh optimizer state at its epoch, then stepped
        assert names[id(group["params"][0])].startswith(order[index])
        for p in group["params"]:
            state = result.optimizer.state[p]
            assert int(state["step"]) == (4 - index) * steps_per_epoch and state["exp_avg"].abs().sum() > 0
    assert result.lineage["trained_layers"] == ["hidden", "bn", "mid", "out"]


def test_unfrozen_layers_join_with_their_discriminative_rate(iris, base_file):
    result = finetune(base_file, iris.train, head=3, unfreeze_every=1, discriminative=0.5, epochs=3, batch_size=16,
                      learning_rate=0.08, progress=False)
    rates = [group["lr"] for group in result.optimizer.param_groups]
    assert rates == pytest.approx([0.08, 0.04, 0.02])  # head, then mid, then bn; hidden not yet (epoch 3)
    assert result.lineage["learning_rates"] == pytest.approx({"hidden": None, "bn": 0.02, "mid": 0.04, "out": 0.08})
    assert result.lineage["frozen_layers"] == ["hidden"]


def test_blocks_group_the_layers_that_unfreeze_together():
    """A zoo ResNet's residual block (conv, bn, conv, bn, downsample) unfreezes at once with blocks='auto'."""
    from modelkeep.transfer.schedule import block_key, group_blocks

    names = ["conv1", "bn1", "layer1_0_conv1", "layer1_0_bn1", "layer1_1_conv1", "layer2_0_conv1",
             "layer2_0_downsample_0", "fc"]
    layers = [Layer(f"layers.{n}", [f"layers.{n}.weight"]) for n in names]
    assert [block_key(n) for n in ("layer2_0_downsample_1", "features_3_conv_0_0", "layer_5", "conv1")] == \
        ["layer2_0", "features_3", "layer_5", "conv1"]
    auto = plan_stages(layers, 7, set(), probe_epochs=0, unfreeze_every=1)
    assert [[name.split(".")[1] for name in s.layers] for s in auto] == [
        ["layer2_0_downsample_0", "layer2_0_conv1"], ["layer1_1_conv1"], ["layer1_0_bn1", "layer1_0_conv1"],
        ["bn1"], ["conv1"]]
    assert len(plan_stages(layers, 7, set(), probe_epochs=0, unfreeze_every=1, blocks="layers")) == 7
    globbed = group_blocks(layers[:7], ("layer1_*", "conv1", "bn1"))
    assert [[layer.short for layer in block] for block in globbed] == [
        ["conv1"], ["bn1"], ["layer1_0_conv1", "layer1_0_bn1", "layer1_1_conv1"], ["layer2_0_conv1"],
        ["layer2_0_downsample_0"]]


def test_a_zoo_resnet_unfreezes_one_residual_block_per_epoch(tmp_path):
    from modelkeep import get_spec
    from modelkeep.data import dataset_from_arrays
    from modelkeep.nn import build

    spec = get_spec("resnet18", num_classes=4, input_shape=(3, 16, 16), width=4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 16, 16, generator=generator).numpy()
    y = torch.randint(0, 3, (32,), generator=generator).numpy()
    data = dataset_from_arrays(x, y, labels=["a", "b", "c"])
    watch = Watch()
    result = finetune(build(spec, seed=0), data, head=3, unfreeze_every=1, epochs=3,
                      batch_size=16, progress=False, callbacks=[watch])
    trained = result.lineage["trained_layers"]
    assert trained[-1] == "fc" and {"layer4_1_conv1", "layer4_1_bn2", "layer4_0_downsample_0"} <= set(trained)
    assert not any(name.startswith("layer3") for name in trained)   # 3 epochs: the head, layer4_1, layer4_0

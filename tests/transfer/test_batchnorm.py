"""BatchNorm modes: frozen statistics never move (across validation too), training statistics move only in layers
that train, re-estimation recomputes them on the new data before fine-tuning and then holds them."""
from __future__ import annotations

import pytest
import torch

from modelkeep.artifact import load
from modelkeep.transfer import finetune, reestimate_statistics
from transfer_helpers import QUICK, changed, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATISTICS = ("layers.bn.running_mean", "layers.bn.running_var", "layers.bn.num_batches_tracked")


class ModeSpy:
    """The BatchNorm's mode at every step and at every epoch end (after validation)."""

    def __init__(self):
        self.modes = []

    def on_step_end(self, state, logs):
        self.modes.append(state.model.layers.bn.training)

    on_epoch_end = on_step_end


def test_frozen_statistics_do_not_move_while_everything_trains_across_validation(iris, base_file):
    before = snapshot(load(base_file).module)
    spy = ModeSpy()
    result = finetune(base_file, iris.train, iris.validation, batchnorm="frozen", learning_rate=0.05,
                      callbacks=[spy], **QUICK)
    assert spy.modes and not any(spy.modes)
    for name in STATISTICS:
        assert torch.equal(before[name], result.model.state_dict()[name]), name
    assert {"layers.bn.weight", "layers.bn.bias", "layers.hidden.0.weight"} <= changed(before, result.model)


def test_training_statistics_move_in_layers_that_train(iris, base_file):
    before = snapshot(load(base_file).module)
    spy = ModeSpy()
    result = finetune(base_file, iris.train, iris.validation, batchnorm="train", callbacks=[spy], **QUICK)
    assert spy.modes and all(spy.modes)
    assert set(STATISTICS) <= changed(before, result.model)


def test_a_frozen_batchnorm_keeps_its_statistics_in_train_mode_too(iris, base_file):
    """The trap: requires_grad=False alone does not stop running statistics; freezing a layer here does."""
    before = snapshot(load(base_file).module)
    spy = ModeSpy()
    result = finetune(base_file, iris.train, iris.validation, freeze=["bn"], callbacks=[spy], **QUICK)
    assert spy.modes and not any(spy.modes)
    for name in STATISTICS:
        assert torch.equal(before[name], result.model.state_dict()[name]), name


def _bn_inputs(model, x):
    """What the BatchNorm receives for ``x`` (the hidden layer's output; nothing before it normalizes)."""
    with torch.no_grad():
        return model.layers.hidden(torch.as_tensor(x, dtype=torch.float32))


def test_reestimation_recomputes_the_statistics_on_the_new_data_then_holds_them(iris, base_file):
    base = load(base_file).module
    inputs = _bn_inputs(base, iris.train.x).double()
    spy = ModeSpy()
    result = finetune(base_file, iris.train, iris.validation, batchnorm="reestimate", freeze="all_but_head",
                      callbacks=[spy], batch_size=16, epochs=2, progress=False)
    bn = result.model.layers.bn
    torch.testing.assert_close(bn.running_mean, inputs.mean(0).float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, inputs.var(0).float(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(bn.running_mean, base.layers.bn.running_mean)  # moved from the base's
    assert spy.modes and not any(spy.modes)  # then held


def test_reestimate_statistics_directly_restores_modes_and_skips_gradients():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5),
                                torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2))
    model.train()
    x = torch.randn(41, 3)  # batches of 8: the trailing single row joins the batch before it
    assert reestimate_statistics(model, x.split(8)) == 2
    assert all(m.training for m in model.modules()) and all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        first = model[0](x)
    torch.testing.assert_close(model[1].running_mean, first.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, first.var(0), rtol=1e-5, atol=1e-6)
    assert int(model[1].num_batches_tracked) == 5
    one_pass = torch.nn.Sequential(*[m for m in model])  # the same modules, one batch of everything
    reestimate_statistics(one_pass, [x])
    with torch.no_grad():
        second = model[3](model[1](model[0](x)))  # train-mode BatchNorm: the batch's own statistics, as in the pass
    torch.testing.assert_close(model[4].running_mean, second.mean(0), rtol=1e-5, atol=1e-6)


class DropoutNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5))
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


class BackboneModes:
    def __init__(self):
        self.modes = []

    def on_step_end(self, state, logs):
        self.modes.append((state.model.backbone[2].training, state.model.head.training))


def test_a_frozen_layer_runs_as_at_inference_until_it_unfreezes(iris):
    """Dropout inside a frozen backbone is off (its features are the inference ones); it comes back on with the
    layer at the unfreezing epoch."""
    torch.manual_seed(0)
    spy = BackboneModes()
    finetune(DropoutNet(), iris.train, iris.validation, probe_epochs=1, epochs=2, batch_size=16, progress=False,
             callbacks=[spy])
    assert spy.modes[:8] == [(False, True)] * 8 and spy.modes[8:] == [(True, True)] * 8


def test_reestimation_of_a_convolutional_batchnorm_averages_over_batch_and_pixels():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU())
    x = torch.randn(20, 1, 6, 6)
    reestimate_statistics(model, x.split(6))  # batches of 6, 6, 6 and 2
    with torch.no_grad():
        features = model[0](x).transpose(0, 1).reshape(3, -1)  # (C, N·H·W)
    torch.testing.assert_close(model[1].running_mean, features.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, features.var(1), rtol=1e-5, atol=1e-6)

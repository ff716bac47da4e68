"""The seams wired into fit: regularizers in the loss, parameter groups and unfreezing, mode policies, the process
strategy."""
from __future__ import annotations

import pytest
import torch

from modelkeep.checkpoint import list_checkpoints
from modelkeep.data import Dataset, load_dataset, split_dataset
from modelkeep.nn import build
from modelkeep.train import CheckpointSettings, GroupRule, KeepEval, L2Toward, SingleProcess, fit

IRIS_MLP = {"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "name": "hidden", "units": 16,
                                                           "activation": "relu"},
                       {"kind": "Dense", "name": "out", "units": 3}]}
SOFTMAX_MLP = {"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "name": "hidden", "units": 16,
                                                              "activation": "relu"},
                          {"kind": "Dense", "name": "out", "units": 3, "activation": "softmax"}]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def iris():
    return split_dataset(load_dataset("iris"), seed=0)


def bn_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ mode policies


class ModeSpy:
    """Records the BatchNorm's mode at every step and at every epoch end (after validation)."""

    def __init__(self):
        self.modes = []

    def on_step_end(self, state, logs):
        self.modes.append(state.model[1].training)

    def on_epoch_end(self, state, logs):
        self.modes.append(state.model[1].training)


def test_a_batch_norm_the_user_froze_in_eval_stays_in_eval_across_validation(iris):
    model = bn_model()
    model[1].requires_grad_(False).eval()  # a frozen backbone's BatchNorm, as a fine-tune sets it
    statistics = (model[1].running_mean.clone(), model[1].running_var.clone())
    spy = ModeSpy()
    fit(model, iris.train, iris.validation, epochs=3, batch_size=16, callbacks=[spy], progress=False)
    assert spy.modes and not any(spy.modes)  # never back in training mode, validation or not
    assert torch.equal(model[1].running_mean, statistics[0]) and torch.equal(model[1].running_var, statistics[1])
    assert model[0].training  # the rest trains as usual


def test_a_module_merely_in_eval_trains_as_before(iris):
    model = bn_model()
    model.eval()  # e.g. just loaded: its parameters are trainable, so no policy keeps it in eval
    spy = ModeSpy()
    fit(model, iris.train, iris.validation, epochs=1, batch_size=16, callbacks=[spy], progress=False)
    assert all(spy.modes)


def test_mode_policies_keep_chosen_modules_in_eval(iris):
    model = bn_model()
    spy = ModeSpy()
    fit(model, iris.train, iris.validation, epochs=2, batch_size=16, callbacks=[spy], progress=False,
        mode_policies=[KeepEval(["1"])])
    assert not any(spy.modes)


# ------------------------------------------------------------------------------------------ regularizers


class Constant:
    """A penalty of ``value`` with no gradient: the loss moves, the weights do not; counts its calls (state)."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def penalty(self, model):
        self.calls += 1
        return self.value + 0.0 * next(model.parameters()).sum()

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_a_regularizer_adds_its_penalty_to_the_training_loss(iris):
    plain, penalized = build(IRIS_MLP, seed=0), build(IRIS_MLP, seed=0)
    a = fit(plain, iris.train, iris.validation, epochs=2, batch_size=16, progress=False)
    constant = Constant(5.0)
    b = fit(penalized, iris.train, iris.validation, epochs=2, batch_size=16, progress=False, regularizers=[constant])
    assert b.history["loss"] == pytest.approx([loss + 5.0 for loss in a.history["loss"]], abs=1e-5)
    assert b.history["val_loss"] == a.history["val_loss"]  # validation measures the data loss alone
    assert constant.calls == 2 * 8  # once per batch: 120 samples in batches of 16
    for name, value in weights(plain).items():
        assert torch.equal(value, penalized.state_dict()[name]), name
    assert b.hyperparameters["regularizers"] == ["Constant"] and "regularizers" not in a.hyperparameters


def test_l2_toward_the_start_keeps_weights_close(iris):
    start = build(IRIS_MLP, seed=0)
    reference = weights(start)

    def distance(model):
        return sum(float((p.detach() - reference[n]).pow(2).sum()) for n, p in model.named_parameters())

    free, pulled = build(IRIS_MLP, seed=0), build(IRIS_MLP, seed=0)
    fit(free, iris.train, epochs=3, batch_size=16, learning_rate=0.05, progress=False)
    fit(pulled, iris.train, epochs=3, batch_size=16, learning_rate=0.05, progress=False,
        regularizers=[L2Toward(reference, alpha=10.0)])
    assert distance(pulled) < 0.5 * distance(free)


def test_a_regularizers_state_is_checkpointed_and_restored(iris, tmp_path):
    class Crash(RuntimeError):
        pass

    class CrashAt:
        def on_step_end(self, state, logs):
            if state.step == 12:
                raise Crash()

    settings = CheckpointSettings(directory=str(tmp_path), every_steps=5, asynchronous=False, durable=False)
    first = Constant(1.0)
    with pytest.raises(Crash):
        fit(build(IRIS_MLP, seed=0), iris.train, epochs=3, batch_size=16, progress=False, checkpoint=settings,
            regularizers=[first], callbacks=[CrashAt()])
    second = Constant(1.0)
    result = fit(build(IRIS_MLP, seed=0), iris.train, epochs=3, batch_size=16, progress=False, checkpoint=settings,
                 regularizers=[second])
    assert result.resumed_from == "checkpoint-000000010.safetensors"
    assert second.calls == 3 * 8  # 10 counted before the checkpoint, restored; 14 after it


# ------------------------------------------------------------------------------------------ parameter groups


class UnfreezeAt:
    def __init__(self, epoch, pattern):
        self.epoch, self.pattern, self.added = epoch, pattern, None
        self.hidden_before = None

    def on_epoch_end(self, state, logs):
        if state.epoch == self.epoch:
            self.hidden_before = state.model.state_dict()["layers.hidden.0.weight"].clone()
            self.added = state.unfreeze(self.pattern)


def test_parameters_unfrozen_mid_run_reach_the_optimizer(iris):
    model = build(IRIS_MLP, seed=0)
    initial = weights(model)
    unfreeze = UnfreezeAt(1, "layers.hidden.*")
    result = fit(model, iris.train, epochs=3, batch_size=16, progress=False, callbacks=[unfreeze],
                 param_groups=[GroupRule("layers.hidden.*", lr_scale=0.5, frozen=True)])
    assert torch.equal(unfreeze.hidden_before, initial["layers.hidden.0.weight"])  # frozen during epoch 1
    assert not torch.equal(model.state_dict()["layers.hidden.0.weight"], initial["layers.hidden.0.weight"])  # then trained
    assert [len(group["params"]) for group in result.optimizer.param_groups] == [2, 2]
    assert result.optimizer.param_groups[1]["lr"] == pytest.approx(0.5e-3)
    assert result.hyperparameters["param_groups"][0]["pattern"] == "layers.hidden.*"


def test_parameters_the_user_froze_by_hand_can_join_too(iris):
    model = build(IRIS_MLP, seed=0)
    model.layers.out.requires_grad_(False)
    before = weights(model)["layers.out.weight"]
    fit(model, iris.train, epochs=2, batch_size=16, progress=False, callbacks=[UnfreezeAt(1, "layers.out.*")])
    assert not torch.equal(model.state_dict()["layers.out.weight"], before)


def test_unfreezing_then_resuming_is_bit_identical(iris, tmp_path):
    class Crash(RuntimeError):
        pass

    class CrashAt:
        def on_step_end(self, state, logs):
            if state.step == 21:
                raise Crash()

    def run(checkpoint=None, crash=None):
        model = build(IRIS_MLP, seed=0)
        callbacks = [UnfreezeAt(1, "layers.hidden.*"), *([crash] if crash else [])]
        return fit(model, iris.train, epochs=3, batch_size=16, progress=False, checkpoint=checkpoint, deterministic=True,
                   callbacks=callbacks, schedule="cosine",
                   param_groups=[GroupRule("layers.hidden.*", lr_scale=0.5, frozen=True)])

    reference = weights(run().model)
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=4, asynchronous=False, durable=False)
    with pytest.raises(Crash):
        run(settings, CrashAt())
    assert list_checkpoints(tmp_path)[-1].step == 20  # after the unfreezing at the end of epoch 1 (step 8)
    resumed = run(settings)
    assert resumed.resumed_from is not None and len(resumed.optimizer.param_groups) == 2
    for name, value in reference.items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


# ------------------------------------------------------------------------------------------ process strategy


class Wrapper(torch.nn.Module):
    """Hides the model (and its ``spec``) the way DistributedDataParallel does."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, x):
        return self.inner(x)


class Recording(SingleProcess):
    """One process, but the model runs wrapped, (with ``half``) half of each epoch is this process's, and calls
    are counted."""

    def __init__(self, *, coordinator=True, half=True):
        self.is_coordinator, self.half = coordinator, half
        self.calls = {"wrap": 0, "shard": 0, "barrier": 0}

    def wrap(self, model):
        self.calls["wrap"] += 1
        return Wrapper(model)

    def unwrap(self, module):
        return module.inner if isinstance(module, Wrapper) else module

    def shard(self, indices):
        self.calls["shard"] += 1
        return indices[0::2] if self.half else indices

    def barrier(self):
        self.calls["barrier"] += 1


class StepCounter:
    def __init__(self):
        self.steps, self.model = 0, None

    def on_step_end(self, state, logs):
        self.steps, self.model = state.step, state.model


def test_the_loss_wiring_reads_the_unwrapped_model(iris):
    plain = fit(build(SOFTMAX_MLP, seed=0), iris.train, epochs=1, batch_size="full", progress=False)
    strategy = Recording(half=False)
    wrapped = fit(build(SOFTMAX_MLP, seed=0), iris.train, epochs=1, batch_size="full", progress=False,
                  strategy=strategy)
    assert wrapped.history["loss"] == plain.history["loss"]  # softmax seen through the wrapper: the same loss
    assert not isinstance(wrapped.model, Wrapper) and strategy.calls["wrap"] == 1


def test_each_process_trains_on_its_shard_and_only_the_coordinator_writes(iris, tmp_path):
    counter = StepCounter()
    worker = Recording(coordinator=False)
    result = fit(build(IRIS_MLP, seed=0), iris.train, epochs=2, batch_size=15, progress="lines", callbacks=[counter],
                 strategy=worker, checkpoint=CheckpointSettings(directory=str(tmp_path), every_steps=2,
                                                                asynchronous=False, durable=False))
    assert counter.steps == 2 * 4  # 60 of the 120 samples per epoch, in batches of 15
    assert worker.calls["shard"] >= 2 and worker.calls["barrier"] > 0 and worker.calls["barrier"] % 2 == 0
    assert not list_checkpoints(tmp_path)  # a process that is not the coordinator writes no checkpoint
    assert not isinstance(counter.model, Wrapper) and not isinstance(result.model, Wrapper)
    coordinator = Recording()
    fit(build(IRIS_MLP, seed=0), iris.train, epochs=2, batch_size=15, progress=False, strategy=coordinator,
        checkpoint=CheckpointSettings(directory=str(tmp_path / "c"), every_steps=2, asynchronous=False, durable=False))
    assert list_checkpoints(tmp_path / "c")


def test_shards_follow_the_seeded_epoch_order():
    x = torch.arange(20, dtype=torch.float32).reshape(20, 1).numpy()
    data = Dataset("counting", x, (x[:, 0] > 9).astype("int64"), ("low", "high"))

    from modelkeep.train.batches import BatchPlan, Split, epoch_batches, epoch_permutation

    split = Split(data, None, torch.device("cpu"), 0)
    plan = BatchPlan(10, 5)
    rows = [b[1][:, 0].long() for b in epoch_batches(split, plan, seed=3, epoch=1, start_batch=0,
                                                      shard=lambda order: order[1::2])]
    assert torch.equal(torch.cat(rows), epoch_permutation(3, 1, 20)[1::2])

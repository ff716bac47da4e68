"""The distributed strategies in one process: torchrun's environment, batch semantics, the read-only checkpoint
view of non-coordinators, the FSDP checkpoint refusal, and the gather-based reductions on a real gloo group."""
from __future__ import annotations

import pytest
import torch

from modelkeep.checkpoint import CheckpointState, Position
from modelkeep.errors import CheckpointError, ConfigError
from modelkeep.train.checkpointing import CheckpointSettings
from modelkeep.train.multiprocess_checkpoints import ReadOnlyCheckpoints
from modelkeep.train.config import load_config
from modelkeep.train.distributed import (DataParallel, FullyShardedParallel, TorchrunEnvironment, shard_units,
                                         strategy_from_environment, training_processes)
from modelkeep.train.loop import EpochLoss
from modelkeep.train.strategy import ProcessStrategy, SingleProcess, any_process, local_batch_size

distributed = torch.distributed
needs_gloo = pytest.mark.skipif(not distributed.is_available() or not distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


@pytest.fixture()
def group(tmp_path):
    """A real gloo process group of one process (file rendezvous), destroyed afterwards."""
    distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    distributed.destroy_process_group()


def test_outside_torchrun_every_strategy_name_is_one_process():
    for name in (None, "auto", "ddp", "fsdp"):
        assert isinstance(strategy_from_environment(name, environ={}), SingleProcess)
    with training_processes("ddp", environ={"PATH": "/bin"}) as strategy:
        assert (strategy.rank, strategy.world_size, strategy.is_coordinator) == (0, 1, True)


def test_torchrun_environment_is_checked():
    env = TorchrunEnvironment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                               "MASTER_PORT": "29500"})
    assert (env.present, env.rank, env.world_size, env.local_rank) == (True, 1, 2, 1)
    with pytest.raises(ConfigError, match="must be integers"):
        TorchrunEnvironment({"RANK": "one", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="is not a rank of WORLD_SIZE=2"):
        TorchrunEnvironment({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "x", "MASTER_PORT": "1"})
    with pytest.raises(ConfigError, match="start the processes with torchrun"):
        TorchrunEnvironment({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="strategy must be one of auto, ddp, fsdp"):
        strategy_from_environment("horovod", environ={})


def test_batch_size_is_the_global_batch():
    assert [local_batch_size(48, w, 1437) for w in (1, 2, 3)] == [48, 24, 16]
    assert local_batch_size(1437, 2, 1437) == 719  # full batch: each process its whole shard
    with pytest.raises(ConfigError, match="batch_size 64 is the global batch .* over 3 processes .* use 63 or 66"):
        local_batch_size(64, 3, 1000)
    with pytest.raises(ConfigError, match="use 2 or 2"):
        local_batch_size(1, 2, 1000)  # per-sample training cannot be split


def test_the_config_takes_a_strategy_and_refuses_an_unknown_one():
    document = {"model": "lenet5", "data": "digits"}
    assert load_config({**document, "strategy": "fsdp"})["strategy"] == "fsdp"
    with pytest.raises(ConfigError, match="strategy must be one of auto, ddp, fsdp, got 'deepspeed'"):
        load_config({**document, "strategy": "deepspeed"})


def test_a_reader_manager_restores_beside_the_coordinator_without_its_lock(tmp_path):
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=1, asynchronous=False, durable=False)
    model = torch.nn.Linear(3, 2)
    with settings.manager() as writer:  # the coordinator holds the folder
        writer.save(CheckpointState(model), Position(0, 1, 1))
        reader = settings.manager(reader=True)
        assert writer._folder_lock is not None and reader._folder_lock is None  # (one process: the lock re-enters)
        copy = torch.nn.Linear(3, 2)
        restored = reader.restore(CheckpointState(copy))
        assert restored.position.step == 1 and torch.equal(copy.weight, model.weight)
        assert isinstance(reader.storage, ReadOnlyCheckpoints) and reader.storage.clean() == []
        with pytest.raises(CheckpointError, match="only the coordinator writes checkpoints"):
            reader.storage.delete(restored.info.name)


@needs_gloo
def test_data_parallel_wraps_in_ddp_and_gathers_in_rank_order(group):
    strategy = DataParallel(rank=0, world_size=1, device=torch.device("cpu"))
    assert isinstance(strategy, ProcessStrategy)
    model = torch.nn.Linear(2, 1)
    wrapped = strategy.wrap(model)
    assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) and strategy.unwrap(wrapped) is model
    assert strategy.gather(torch.tensor([1.0, 2.0])).tolist() == [[1.0, 2.0]]
    assert any_process(strategy, True, False) == (True, False)
    strategy.barrier()
    frozen = torch.nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameter"):
        strategy.wrap(frozen)


def test_epoch_loss_shares_each_loss_once_and_keeps_global_sizes():
    class Halves:  # a stand-in "other process" that saw twice each loss: gathers [x, 2x]
        world_size = 2

        def gather(self, tensor):
            return torch.stack([tensor, 2 * tensor])

    losses = EpochLoss()
    for value in (1.0, 2.0):
        losses.add(torch.tensor(value), 64)
    losses.share(Halves())
    assert [float(x) for x in losses.losses] == [1.5, 3.0] and losses.shared == 2
    losses.add(torch.tensor(4.0), 32)
    losses.share(Halves())
    losses.share(Halves())  # nothing new: nothing changes
    assert [float(x) for x in losses.losses] == [1.5, 3.0, 6.0]
    assert losses.mean() == pytest.approx((1.5 * 64 + 3.0 * 64 + 6.0 * 32) / 160)
    losses.share(SingleProcess())  # one process: never gathers


def test_shard_units_are_the_modules_with_their_own_parameters_innermost_first():
    model = torch.nn.ModuleDict({"body": torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()),
                                 "head": torch.nn.Linear(3, 1)})
    units = shard_units(model)
    assert units == [model["head"], model["body"][0]]


class Crash(RuntimeError):
    pass


class CrashAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state, logs):
        if state.step == self.step:
            raise Crash(f"step {state.step}")


TINY = {"name": "tiny", "layers": [{"kind": "Input", "name": "image", "shape": [1, 8, 8]},
                                   {"kind": "Flatten", "name": "flatten"},
                                   {"kind": "Dense", "name": "hidden", "units": 32, "activation": "relu"},
                                   {"kind": "Dropout", "name": "dropout", "rate": 0.2},
                                   {"kind": "Dense", "name": "logits", "units": 10}]}


@needs_gloo
@pytest.mark.usefixtures("one_torch_thread")
def test_fsdp_checkpoints_are_sharded_and_a_crashed_run_resumes_bit_identical(group, tmp_path, digits_splits):
    from modelkeep.checkpoint.sharded import list_sharded
    from modelkeep.nn import build
    from modelkeep.train import fit

    def train(checkpoint=None, crash=None):
        strategy = FullyShardedParallel(rank=0, world_size=1, device=torch.device("cpu"))
        return fit(build(TINY, seed=0), digits_splits.train, digits_splits.validation, epochs=2, batch_size=64,
                   learning_rate=3e-3, early_stopping={"patience": 3}, progress=False, device="cpu",
                   deterministic=True, checkpoint=checkpoint, strategy=strategy, callbacks=[crash or CrashAt(None)])

    reference = train()
    settings = CheckpointSettings(directory=str(tmp_path), every_steps=5, asynchronous=False, durable=False)
    with pytest.raises(Crash):
        train(settings, CrashAt(12))  # mid-epoch: the newest checkpoint is step 10
    assert [folder.name for folder in list_sharded(tmp_path / "sharded")] == ["step-000000005", "step-000000010"]
    resumed = train(settings)
    assert resumed.resumed_from == "step-000000010"
    assert all(not hasattr(v, "device_mesh") for v in resumed.model.state_dict().values())  # the whole model
    assert all(torch.equal(a, b) for a, b in zip(reference.model.state_dict().values(),
                                                 resumed.model.state_dict().values()))
    times = lambda result: [{k: v for k, v in r.items() if k != "time"} for r in result.history.records]
    assert times(resumed) == times(reference)
    with pytest.raises(CheckpointError, match="holds sharded .FSDP2. checkpoints and no single-file ones"):
        fit(build(TINY, seed=0), digits_splits.train, epochs=1, progress=False, device="cpu", checkpoint=settings)

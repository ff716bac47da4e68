"""The process-strategy seam: SingleProcess, shard_indices and unwrapping torch's wrappers."""
from __future__ import annotations

import pytest
import torch

from modelkeep.errors import ConfigError
from modelkeep.train import epoch_permutation
from modelkeep.train.strategy import ProcessStrategy, SingleProcess, shard_indices, unwrap_model


@pytest.mark.parametrize("n", [0, 1, 5, 12, 13, 97])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 8])
def test_the_shards_of_every_rank_cover_the_seed_epoch_permutation(n, world_size):
    for seed, epoch in ((0, 0), (7, 3)):
        order = epoch_permutation(seed, epoch, n)
        shards = [shard_indices(order, rank, world_size) for rank in range(world_size)]
        assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
        assert set(torch.cat(shards).tolist()) == set(order.tolist())
        assert sum(len(s) for s in shards) == (-(-n // world_size) * world_size if n else 0)
        interleaved = torch.stack(shards, dim=1).reshape(-1) if n else order
        assert torch.equal(interleaved[:n], order)  # rank r holds order[r::world_size], padding at the end
        dropped = [shard_indices(order, rank, world_size, drop_remainder=True) for rank in range(world_size)]
        kept = torch.cat(dropped)
        assert len(kept) == n - n % world_size and len(set(kept.tolist())) == len(kept)
        assert set(kept.tolist()) == set(order[: len(kept)].tolist())


def test_padding_wraps_around_like_the_distributed_sampler():
    assert [shard_indices(torch.arange(5), r, 2).tolist() for r in range(2)] == [[0, 2, 4], [1, 3, 0]]
    assert [shard_indices(torch.arange(2), r, 5).tolist() for r in range(5)] == [[0], [1], [0], [1], [0]]
    with pytest.raises(ConfigError, match="rank must be"):
        shard_indices(torch.arange(4), 2, 2)
    with pytest.raises(ConfigError, match="world_size must be"):
        shard_indices(torch.arange(4), 0, 0)


def test_single_process_changes_nothing():
    strategy = SingleProcess()
    assert isinstance(strategy, ProcessStrategy)
    model = torch.nn.Linear(2, 1)
    assert strategy.wrap(model) is model and strategy.unwrap(model) is model
    order = epoch_permutation(3, 1, 10)
    assert torch.equal(strategy.shard(order), order) and torch.equal(shard_indices(order, 0, 1), order)
    assert (strategy.rank, strategy.world_size, strategy.is_coordinator) == (0, 1, True)
    strategy.barrier()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile imports torch.jit internals
def test_unwrap_strips_compile_data_parallel_and_ddp_but_not_a_users_module_attribute(tmp_path):
    model = torch.nn.Linear(2, 1)
    assert unwrap_model(torch.compile(model)) is model
    assert unwrap_model(torch.nn.DataParallel(model)) is model

    class UserModel(torch.nn.Module):  # an attribute named "module" does not make a wrapper
        def __init__(self):
            super().__init__()
            self.module = torch.nn.Linear(2, 1)

    user = UserModel()
    assert unwrap_model(user) is user
    distributed = pytest.importorskip("torch.distributed")
    if not distributed.is_available():
        pytest.skip("torch.distributed is not available")
    distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = torch.compile(torch.nn.parallel.DistributedDataParallel(model))
        assert SingleProcess().unwrap(wrapped) is model
    finally:
        distributed.destroy_process_group()

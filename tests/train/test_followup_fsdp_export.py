"""``modelkeep export-checkpoint RUN_DIR OUT`` on the sharded checkpoints of a real FSDP2 training run.

One process on a real gloo group, as ``test_distributed_units.py`` runs FSDP2: fit writes its sharded checkpoints
through ``train/multiprocess_checkpoints.py`` into ``RUN_DIR/checkpoints/sharded/step-<n>/``; the release file
made from them must load and predict exactly as the run's own model file does.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modelkeep.cli.main import main
from modelkeep.train.checkpointing import CheckpointSettings
from modelkeep.train.distributed import FullyShardedParallel
from test_distributed_units import TINY, group, needs_gloo  # noqa: F401  (group is a fixture)


@pytest.fixture()
def fsdp_run(group, tmp_path, digits_splits):
    """A finished 2-epoch FSDP2 run whose checkpoints live in ``run/checkpoints`` (as `modelkeep train` keeps them)."""
    from modelkeep.data import Standardize
    from modelkeep.nn import build
    from modelkeep.train import fit

    run_dir = tmp_path / "run"
    settings = CheckpointSettings(directory=str(run_dir / "checkpoints"), every_steps=5, asynchronous=False,
                                  durable=False)
    strategy = FullyShardedParallel(rank=0, world_size=1, device=torch.device("cpu"))
    result = fit(build(TINY, seed=0), digits_splits.train, digits_splits.validation, epochs=2, batch_size=64,
                 learning_rate=3e-3, preprocessing=Standardize(per_feature=False), progress=False, device="cpu",
                 deterministic=True, checkpoint=settings, strategy=strategy)
    return run_dir, result


@needs_gloo
@pytest.mark.usefixtures("one_torch_thread")
def test_export_checkpoint_of_an_fsdp_run_predicts_like_the_runs_own_model(fsdp_run, tmp_path, digits_splits):
    from modelkeep.artifact import load, read_tensors, save
    from modelkeep.checkpoint.sharded import list_sharded

    run_dir, result = fsdp_run
    newest = list_sharded(run_dir / "checkpoints" / "sharded")[-1]
    assert not list((run_dir / "checkpoints").glob("*.safetensors"))  # FSDP2 writes sharded checkpoints only
    out = tmp_path / "release.safetensors"
    assert main(["export-checkpoint", str(run_dir), str(out)]) == 0
    exported, own = load(out), load(save(result, tmp_path / "own.safetensors"))
    assert set(read_tensors(out)) == set(own.module.state_dict())  # no "model/" prefix, no optimizer
    for name, tensor in own.module.state_dict().items():
        assert torch.equal(exported.module.state_dict()[name], tensor), name
    assert exported.labels == own.labels and exported.manifest.preprocessing == own.manifest.preprocessing
    lineage = exported.manifest.lineage["checkpoint"]
    assert (lineage["name"], lineage["step"], lineage["epoch"]) == (newest.name, int(newest.name[5:]), 2)
    x = digits_splits.test.x
    mine, theirs = exported.predict(x), own.predict(x)
    np.testing.assert_array_equal(mine.probabilities, theirs.probabilities)
    assert mine.labels == theirs.labels
    # The command also takes the checkpoint folder and a single step-<n> folder.
    for where in (run_dir / "checkpoints", newest):
        assert main(["export-checkpoint", str(where), str(tmp_path / "again.safetensors")]) == 0
        assert torch.equal(load(tmp_path / "again.safetensors").module.state_dict()["layers.logits.bias"],
                           own.module.state_dict()["layers.logits.bias"])


@needs_gloo
@pytest.mark.usefixtures("one_torch_thread")
def test_an_older_step_and_the_optimizer_state_export_too(fsdp_run, tmp_path):
    from modelkeep.artifact import load
    from modelkeep.checkpoint.sharded import list_sharded

    run_dir, _ = fsdp_run
    oldest = list_sharded(run_dir / "checkpoints" / "sharded")[0]
    step = int(oldest.name[5:])
    out = tmp_path / "older.safetensors"
    assert main(["export-checkpoint", str(run_dir), str(out), "--step", str(step), "--with-optimizer"]) == 0
    loaded = load(out)
    assert loaded.manifest.lineage["checkpoint"]["step"] == step
    optimizer = torch.optim.Adam(loaded.module.parameters(), lr=1e-3)
    optimizer.load_state_dict(loaded.optimizer_state())
    moments = [state["exp_avg"] for state in optimizer.state.values()]
    assert len(moments) == len(list(loaded.module.parameters())) and all(m.abs().sum() > 0 for m in moments)
    assert all(int(state["step"]) == step for state in optimizer.state.values())


@needs_gloo
@pytest.mark.usefixtures("one_torch_thread")
def test_fsdp_checkpoints_carry_the_manifest_pieces_and_native_unsigned_random_state(fsdp_run):
    from modelkeep.checkpoint.sharded import SHARDED_FOLDER, list_sharded
    from modelkeep.train.multiprocess_checkpoints import SHARDED_FOLDER as FIT_FOLDER

    run_dir, _ = fsdp_run
    assert FIT_FOLDER == SHARDED_FOLDER
    manifest = json.loads((list_sharded(run_dir / "checkpoints" / SHARDED_FOLDER)[-1] / "manifest.json").read_text())
    assert manifest["document"]["extra_manifest"]["architecture"]["type"] == "spec"
    assert "uint32" not in manifest["document"]  # no int32 smuggling list any more
    numpy_state = [entry for key, entry in manifest["tensors"].items() if key.startswith("rng/")
                   and entry["dtype"] == "uint32"]
    assert numpy_state and numpy_state[0]["size"] == [624]


@needs_gloo
def test_save_optimizer_is_refused_before_training_under_fsdp(group, tmp_path, monkeypatch):
    """FSDP2 splits the optimizer state across processes; the model file cannot hold it (said before any step)."""
    from modelkeep.errors import ConfigError
    from modelkeep.train.config import load_config, run_training

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(key, value)  # as torchrun --nproc-per-node 1 sets them
    config = load_config({"model": TINY, "data": "digits", "strategy": "fsdp", "save_optimizer": True})
    with pytest.raises(ConfigError, match="save_optimizer needs the whole optimizer state in one process"):
        run_training(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
def test_export_checkpoint_assembles_a_two_process_fsdp_run(tmp_path, digits_splits):
    """Two processes under torchrun, each writing its half of every parameter: the exported file holds the
    whole weights the run ended with (gathered by the run itself) and predicts with them."""
    from modelkeep.artifact import load
    from test_distributed_runs import launch, outcome

    launch(2, str(tmp_path / "out"), "--checkpoint", str(tmp_path / "checkpoints"), "--strategy", "fsdp",
           "--dropout", "0")
    newest = sorted((tmp_path / "checkpoints" / "sharded").iterdir())[-1]
    assert sorted(p.name for p in newest.iterdir()) == ["__0_0.distcp", "__1_0.distcp", "manifest.json"]
    out = tmp_path / "release.safetensors"
    assert main(["export-checkpoint", str(tmp_path / "checkpoints"), str(out)]) == 0
    final = outcome(tmp_path / "out")["weights"]
    exported = load(out)
    assert set(exported.module.state_dict()) == set(final)
    assert all(torch.equal(exported.module.state_dict()[name], tensor) for name, tensor in final.items())
    prediction = exported.predict(digits_splits.test.x[:8])
    assert len(prediction.labels) == 8

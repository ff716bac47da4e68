"""Sharded checkpoints across processes: FSDP2 on two ranks (gloo on loopback) saves; one and three resume.

Each rank is a subprocess running ``sharded_worker.py``; the two-rank save runs once per module. Resuming in
one process (no process group) runs here; on three ranks is ``slow``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sharded_worker
from modelkeep.checkpoint.sharded import latest_sharded, list_sharded, load_sharded, open_sharded
from modelkeep.cli.main import main

WORKER = Path(sharded_worker.__file__)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_ranks(mode: str, world: int, checkpoints: Path, out: Path) -> None:
    port = str(_free_port())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    processes = [subprocess.Popen([sys.executable, str(WORKER), mode, str(rank), str(world), port, str(checkpoints),
                                   str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
                 for rank in range(world)]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0].decode(errors="replace"))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    failed = [(rank, text[-3000:]) for rank, (process, text) in enumerate(zip(processes, outputs))
              if process.returncode != 0]
    assert not failed, failed


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``(checkpoints, out)`` after a two-rank FSDP2 run saved at step SAVE_AT and trained on."""
    root = tmp_path_factory.mktemp("sharded")
    checkpoints, out = root / "checkpoints", root / "out"
    out.mkdir()
    _run_ranks("save", 2, checkpoints, out)
    return checkpoints, out


def _reference(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "reference.safetensors"))


def test_two_ranks_write_one_shard_each_and_a_json_manifest(saved):
    checkpoints, _ = saved
    folder = latest_sharded(checkpoints)
    assert folder == checkpoints / f"step-{sharded_worker.SAVE_AT:09d}" and list_sharded(checkpoints) == [folder]
    assert sorted(p.name for p in folder.iterdir()) == ["__0_0.distcp", "__1_0.distcp", "manifest.json"]
    manifest = open_sharded(folder)
    assert manifest.world_size == 2
    chunks = manifest.metadata.state_dict_metadata["model.layers.hidden.0.weight"].chunks
    assert len(chunks) == 2  # FSDP2 shards every parameter over both ranks
    assert sharded_worker.folder_pickles(checkpoints) == {}


def test_one_process_resumes_bit_identical_and_the_loss_curve_continues(saved, tmp_path):
    from modelkeep.nn import build
    from modelkeep.quickstart import DIGITS_CNN
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    checkpoints, out = saved
    model = build(DIGITS_CNN, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    document = load_sharded(checkpoints, {"model": model_sd, "optim": optim_sd})
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    assert document["position"] == {"epoch": 0, "batch": sharded_worker.SAVE_AT, "step": sharded_worker.SAVE_AT}
    loaded = sharded_worker.full_state(model, optimizer)
    reference = _reference(out)
    assert sorted(loaded) == sorted(reference)
    assert all(torch.equal(loaded[key], reference[key]) for key in reference)
    assert optimizer.param_groups[0]["lr"] == 1e-2  # restored from the manifest's JSON values
    losses = sharded_worker.train(model, optimizer, range(sharded_worker.SAVE_AT, sharded_worker.END), 0, 1, False)
    expected = json.loads((out / "losses-save.json").read_text())
    assert losses == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_three_ranks_reshard_the_two_rank_checkpoint(saved, tmp_path):
    from safetensors.torch import load_file

    checkpoints, out = saved
    _run_ranks("load", 3, checkpoints, out)
    loaded, reference = load_file(str(out / "loaded-3.safetensors")), _reference(out)
    assert sorted(loaded) == sorted(reference)
    assert all(torch.equal(loaded[key], reference[key]) for key in reference)
    losses = json.loads((out / "losses-3.json").read_text())
    assert losses == pytest.approx(json.loads((out / "losses-save.json").read_text()), rel=1e-5)


def test_export_checkpoint_makes_a_model_file_that_predicts_like_the_trained_model(saved, tmp_path, capsys):
    from modelkeep.artifact import load
    from modelkeep.nn import build
    from modelkeep.quickstart import DIGITS_CNN

    checkpoints, out = saved
    reference = _reference(out)
    trained = build(DIGITS_CNN, seed=3)
    trained.load_state_dict({key[len("model."):]: t for key, t in reference.items() if key.startswith("model.")})
    trained.eval()
    model_file = tmp_path / "model.safetensors"
    assert main(["export-checkpoint", str(checkpoints.parent), str(model_file)]) == 0  # the run folder
    loaded = load(model_file)
    assert loaded.labels == tuple(str(i) for i in range(10))
    assert loaded.manifest.lineage["checkpoint"]["step"] == sharded_worker.SAVE_AT
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.module.eval()(x), trained(x))
    step_folder = tmp_path / "from-step-folder.safetensors"
    assert main(["export-checkpoint", str(latest_sharded(checkpoints)), str(step_folder)]) == 0
    assert all(torch.equal(a, b) for a, b in zip(load(step_folder).module.state_dict().values(),
                                                  loaded.module.state_dict().values()))
    assert main(["export-checkpoint", str(checkpoints), str(tmp_path / "x.safetensors"), "--best"]) == 2
    assert "sharded" in capsys.readouterr().err


@pytest.mark.slow
def test_a_damaged_shard_fails_every_rank_with_the_integrity_error(saved, tmp_path):
    import shutil

    checkpoints, _ = saved
    damaged = tmp_path / "checkpoints"
    shutil.copytree(checkpoints, damaged)
    shard = next(damaged.glob("step-*")) / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x40
    shard.write_bytes(bytes(data))
    _run_ranks("load-damaged", 2, damaged, tmp_path)
    assert all("does not match its hash" in (tmp_path / f"refused-{rank}.txt").read_text() for rank in (0, 1))

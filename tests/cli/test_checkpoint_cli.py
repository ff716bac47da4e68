"""``modelkeep checkpoints`` and ``modelkeep export-checkpoint``."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from modelkeep.checkpoint import (CheckpointManager, EveryNEpochs, KeepAll, KeepBestN, KeepUnion, Position,
                                  CheckpointState, manifest_pieces)
from modelkeep.cli.main import main
from modelkeep.quickstart import DIGITS_CNN


def make_run(location):
    """Three checkpoints of a spec-built model at ``location`` (a folder or an fsspec URL); returns the model."""
    from modelkeep.nn import build

    model = build(DIGITS_CNN, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = CheckpointState(model, optimizer)
    manager = CheckpointManager(location, save_on=EveryNEpochs(1),
                                keep=KeepUnion(KeepAll(), KeepBestN(1, "val_loss")), asynchronous=True)
    pieces = manifest_pieces(model, labels=[str(i) for i in range(10)], hyperparameters={"lr": 1e-3})
    x = torch.randn(32, 1, 8, 8)
    y = torch.randint(0, 10, (32,))
    for epoch, val_loss in enumerate([0.9, 0.3, 0.6], 1):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        manager.save(state, Position(epoch, 0, epoch * 10), metrics={"val_loss": val_loss},
                     history={"epoch": list(range(1, epoch + 1))}, extra_manifest=pieces)
    manager.close()
    return model


@pytest.fixture()
def run_dir(tmp_path):
    return tmp_path / "run", make_run(tmp_path / "run")


def test_list_checkpoints_json(run_dir, capsys):
    directory, _ = run_dir
    assert main(["checkpoints", str(directory), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["step"] for c in listed] == [10, 20, 30]
    assert listed[1]["metrics"] == {"val_loss": 0.3} and all(c["verified"] for c in listed)
    assert listed[0]["monitor"] == {"metric": "val_loss", "mode": "min"} and listed[0]["size"] > 0
    assert main(["checkpoints", str(directory)]) == 0
    assert "verified" in capsys.readouterr().out


def test_damaged_checkpoint_is_listed_as_damaged(run_dir, capsys):
    directory, _ = run_dir
    path = directory / "checkpoint-000000030.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    main(["checkpoints", str(directory), "--json"])
    listed = {c["step"]: c for c in json.loads(capsys.readouterr().out)}
    assert listed[30]["verified"] is False and "hash" in listed[30]["error"]


@pytest.mark.parametrize("args, step", [([], 30), (["--best"], 20), (["--step", "10"], 10)])
def test_export_makes_a_loadable_release_file(run_dir, tmp_path, args, step):
    from modelkeep.artifact import load, read_tensors

    directory, model = run_dir
    out = tmp_path / "release.safetensors"
    assert main(["export-checkpoint", str(directory), str(out), *args]) == 0
    loaded = load(out)
    assert loaded.manifest.lineage["checkpoint"]["step"] == step
    assert loaded.labels == tuple(str(i) for i in range(10))
    assert loaded.manifest.history == {"epoch": list(range(1, step // 10 + 1))}
    if step == 30:
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.module.state_dict().values()))
    assert not any(name.startswith("optimizer/") for name in read_tensors(out))


def test_export_without_a_manifest_says_why(tmp_path, capsys):
    manager = CheckpointManager(tmp_path, asynchronous=False)
    manager.save(CheckpointState(torch.nn.Linear(2, 2)), Position(1, 0, 1))
    assert main(["export-checkpoint", str(tmp_path), str(tmp_path / "out.safetensors")]) == 2
    assert "holds no model manifest" in capsys.readouterr().err


def test_export_with_optimizer_restores_into_a_fresh_optimizer(run_dir, tmp_path):
    from modelkeep.artifact import load

    directory, model = run_dir
    out = tmp_path / "with-optimizer.safetensors"
    assert main(["export-checkpoint", str(directory), str(out), "--with-optimizer"]) == 0
    loaded = load(out)
    optimizer = torch.optim.Adam(loaded.module.parameters(), lr=1e-3)
    optimizer.load_state_dict(loaded.optimizer_state())
    moments = [s["exp_avg"] for s in optimizer.state.values()]
    assert len(moments) == len(list(model.parameters())) and all(m.abs().sum() > 0 for m in moments)
    assert optimizer.state_dict()["state"][0]["step"] == 3


def test_list_and_export_from_an_fsspec_store(tmp_path, capsys):
    import uuid

    import fsspec

    from modelkeep.artifact import load

    url = f"memory:///cli-{uuid.uuid4().hex}/checkpoints"
    try:
        make_run(url)
        assert main(["checkpoints", url, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [c["step"] for c in listed] == [10, 20, 30] and all(c["verified"] for c in listed)
        assert listed[-1]["path"] == f"{url}/checkpoint-000000030.safetensors"
        assert main(["checkpoints", url.removesuffix("/checkpoints"), "--json"]) == 0  # the run folder works too
        assert json.loads(capsys.readouterr().out) == listed
        out = tmp_path / "release.safetensors"
        assert main(["export-checkpoint", url, str(out), "--best"]) == 0
        assert load(out).manifest.lineage["checkpoint"]["step"] == 20
    finally:
        fsspec.filesystem("memory").rm(url[len("memory://"):].rsplit("/", 1)[0], recursive=True)


def test_the_run_folder_is_accepted_as_well_as_its_checkpoint_folder(tmp_path, capsys):
    """``checkpoints RUN_DIR``, ``export-checkpoint RUN_DIR --best`` and ``list_checkpoints(RUN_DIR)`` look in
    RUN_DIR/checkpoints when RUN_DIR holds none itself."""
    from modelkeep.artifact import load
    from modelkeep.checkpoint import list_checkpoints

    run = tmp_path / "run"
    make_run(run / "checkpoints")
    assert [c.step for c in list_checkpoints(run)] == [10, 20, 30]
    assert main(["checkpoints", str(run), "--json"]) == 0
    assert [c["step"] for c in json.loads(capsys.readouterr().out)] == [10, 20, 30]
    out = tmp_path / "best.safetensors"
    assert main(["export-checkpoint", str(run), str(out), "--best"]) == 0
    assert load(out).manifest.lineage["checkpoint"]["step"] == 20


def test_inspect_describes_a_checkpoint_file(run_dir, capsys):
    directory, _ = run_dir
    path = directory / "checkpoint-000000020.safetensors"
    assert main(["inspect", str(path)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "step 20, epoch 2, batch 0" in text and "val_loss 0.3" in text and "monitor val_loss (min)" in text
    assert "model (" in text and "optimizer (" in text and "export-checkpoint" in text
    assert main(["inspect", str(path), "--json", "--verify"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["kind"] == "checkpoint" and described["step"] == 20 and described["verified"] is True
    assert described["parts"]["model"]["tensors"] > 0 and described["exportable"] is True


def test_export_onto_a_folder_or_into_an_unwritable_one_is_one_line_naming_the_destination(run_dir, tmp_path,
                                                                                         capsys):
    directory, _ = run_dir
    folder = tmp_path / "release.safetensors"
    folder.mkdir()
    assert main(["export-checkpoint", str(directory), str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"modelkeep: error: cannot write {folder}: it is a folder; give a file name inside it "
                   f"(such as {folder / 'model.safetensors'}) or another path")
    if os.geteuid() == 0:  # chmod does not stop root: /sys refuses new files even to root
        unwritable = Path("/sys/release.safetensors")
    else:
        (tmp_path / "locked").mkdir(mode=0o500)
        unwritable = tmp_path / "locked" / "release.safetensors"
    assert main(["export-checkpoint", str(directory), str(unwritable)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"modelkeep: error: cannot write {unwritable}: the folder")
    assert ".modelkeep-tmp-" not in err[0]

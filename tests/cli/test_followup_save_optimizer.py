"""``modelkeep train CONFIG --save-optimizer`` (or ``save_optimizer: true``) keeps the optimizer state in the model
file, so ``modelkeep train CONFIG2 --init-from FILE`` continues Adam's moments instead of starting fresh."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from modelkeep import load
from modelkeep.cli.main import main

from task_specs import dense_spec, multiclass_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def configs(tmp_path):
    """Two configs on the same model: old data, then new data of the same task."""
    rng = np.random.default_rng(0)
    paths = []
    for name in ("old", "new"):
        x, y = multiclass_data(rng, 200)
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
        config = {"model": dense_spec(4, 3), "data": {"path": f"{name}.npz"}, "epochs": 2, "batch_size": 32,
                  "learning_rate": 0.01, "checkpoint": False}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        paths.append(tmp_path / f"{name}.yaml")
    return paths


def _adam_step(path) -> float:
    """The optimizer steps the file's Adam state has counted (the same for every parameter)."""
    state = load(path).optimizer_state()["state"]
    return float(next(iter(state.values()))["step"])


def _train(config, run_dir, *flags) -> object:
    assert main(["train", str(config), "--run-dir", str(run_dir), "--quiet", *flags]) == 0
    return run_dir / "model.safetensors"


def test_save_optimizer_lets_init_from_continue_the_optimizer_state(configs, tmp_path):
    old, new = configs
    without = _train(old, tmp_path / "plain")
    assert load(without).manifest.optimizer is None  # the default is unchanged: weights only
    parent = _train(old, tmp_path / "v1", "--save-optimizer")
    assert load(parent).manifest.optimizer is not None
    assert yaml.safe_load((tmp_path / "v1" / "config.yaml").read_text())["save_optimizer"] is True

    child = _train(new, tmp_path / "v2", "--init-from", str(parent), "--save-optimizer")
    fresh = _train(new, tmp_path / "v2-fresh", "--init-from", str(without), "--save-optimizer")
    assert load(child).manifest.hyperparameters["optimizer_state"] == "continued from the parent"
    assert load(fresh).manifest.hyperparameters["optimizer_state"] == "fresh"
    assert load(child).lineage["parent"]["content_hash"] == load(parent).content_hash
    # Adam's step counts go on from the parent's: the moments were loaded, not just recorded as loaded.
    assert _adam_step(parent) > 0 and _adam_step(child) == _adam_step(parent) + _adam_step(fresh)


def test_the_config_key_saves_it_too_and_is_checked(configs, tmp_path, capsys):
    old, _ = configs
    document = yaml.safe_load(old.read_text())
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(yaml.safe_dump({**document, "save_optimizer": True}))
    assert load(_train(keyed, tmp_path / "keyed")).manifest.optimizer is not None
    capsys.readouterr()
    assert main(["train", str(old), "--run-dir", str(tmp_path / "bad"), "--set", "save_optimizer=always"]) == 2
    assert "save_optimizer must be true or false, got 'always'" in capsys.readouterr().err


def test_an_interrupted_run_is_resumed_with_the_flag_repeated():
    import argparse

    from modelkeep.cli.train import resume_command

    args = argparse.Namespace(config="new.yaml", init_from="v1.safetensors", old_test=None, save_optimizer=True,
                              overrides=[], quiet=True, progress="auto", json=False)
    assert resume_command(args, Path("runs/v2")) == (
        "modelkeep train new.yaml --run-dir runs/v2 --init-from v1.safetensors --save-optimizer --quiet")

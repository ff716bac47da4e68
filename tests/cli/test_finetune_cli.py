"""``modelkeep finetune BASE DATA ...`` over the task matrix: a saved base with a new head learns new data;
a run SIGKILLed mid-training and run again ends bit-identical to one never interrupted; errors are one line
and status 2; the parameter tables show what trained."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modelkeep import load
from modelkeep.artifact.tensors import read_tensors
from modelkeep.cli import finetune as finetune_command
from modelkeep.cli.main import main

from transfer_matrix import TASKS, make_base, score, write_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # runs here and in subprocesses compute alike
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bases")
    return {task: make_base(task, folder) for task in TASKS}


def _flags(task: str) -> list[str]:
    _, _, loss, head, _ = TASKS[task]
    return ["--head", str(head), "--epochs", "25", "--learning-rate", "0.02", "--batch-size", "64",
            "--set", f"loss={loss}", "--quiet"]


@pytest.mark.parametrize("task", list(TASKS))
def test_finetune_a_saved_base_with_a_new_head(task, bases, tmp_path, capsys):
    data, test_x, test_y = write_data(task, tmp_path)
    out = tmp_path / "tuned.safetensors"
    assert main(["finetune", str(bases[task]), str(data), *_flags(task), "--run-dir", str(tmp_path / "run"),
                 "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == str(out) and printed["epochs_run"] == 25
    model = load(out)
    assert score(task, model, test_x, test_y) >= TASKS[task][4]
    assert model.lineage["parent"]["content_hash"] == load(bases[task]).content_hash
    assert (tmp_path / "run" / "history.json").is_file() and (tmp_path / "run" / "checkpoints").is_dir()


def test_feature_extraction_keeps_the_body_bit_identical_and_the_tables_say_so(bases, tmp_path, capsys):
    data, _, _ = write_data("multiclass", tmp_path)
    out = tmp_path / "tuned.safetensors"
    assert main(["finetune", str(bases["multiclass"]), str(data), "--head", "3", "--freeze", "all_but_head",
                 "--epochs", "2", "--l2sp-beta", "0.01", "--run-dir", str(tmp_path / "run"), "--out", str(out),
                 "--quiet"]) == 0
    before, after = read_tensors(bases["multiclass"]), read_tensors(out)
    assert torch.equal(before["layers.dense_1.0.weight"], after["layers.dense_1.0.weight"])
    assert torch.equal(before["layers.dense_1.0.bias"], after["layers.dense_1.0.bias"])
    assert not torch.equal(before["layers.head.weight"], after["layers.head.weight"])
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fine-tuned" in text and "trained" in text and "freeze=all_but_head" in text
    assert main(["inspect", str(out), "--json"]) == 0
    layers = {row["name"]: row for row in json.loads(capsys.readouterr().out)["layers"]}
    assert layers["head"]["trained"] is True and layers["dense_1"]["trained"] is False
    assert main(["params", str(out), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["layers"]}
    assert rows["head"]["frozen"] is False and rows["dense_1"]["frozen"] is True
    assert rows["head"]["learning_rate"] == pytest.approx(0.001)


def test_the_flags_make_the_config_a_file_would_hold():
    args = finetune_command_args(["base.safetensors", "digits", "--head", "10", "--freeze", "0", "--freeze",
                                  "conv*", "--l2sp", "0.1", "--l2sp-beta", "0.01", "--discriminative", "0.5",
                                  "--unfreeze-every", "2", "--batchnorm", "frozen", "--probe-epochs", "1",
                                  "--epochs", "6", "--seed", "3"])
    assert finetune_command.config_document(args) == {
        "base": "base.safetensors", "data": {"name": "digits"}, "epochs": 6, "seed": 3,
        "transfer": {"head": 10, "freeze": [0, "conv*"], "unfreeze_every": 2, "discriminative": 0.5,
                     "l2sp": {"alpha": 0.1, "beta": 0.01}, "batchnorm": "frozen", "probe_epochs": 1}}
    command = finetune_command.resume_command(args, Path("runs/x y"))
    assert command.startswith("modelkeep finetune base.safetensors digits --head 10 --freeze 0 --freeze 'conv*'")
    assert "--run-dir 'runs/x y'" in command


def finetune_command_args(argv: list[str]):
    from modelkeep.cli.main import build_parser

    return build_parser().parse_args(["finetune", *argv])


@pytest.mark.parametrize("argv, fragment", [
    (["missing.safetensors", "digits"], "base model file 'missing.safetensors' does not exist"),
    (["{base}", "{data}", "--head", "0"], "head must be a whole number >= 1"),
    (["{base}", "{data}", "--set", "transfer.bogus=1"], "unknown transfer setting 'bogus'"),
    (["{base}", "{data}", "--discriminative", "2"], "discriminative must be a number in (0, 1]"),
    (["{base}", "{data}", "--set", "epochs=0"], "epochs"),
    (["{base}", "no_such_dataset"], "no_such_dataset"),
    (["{base}", "{data}", "--head", "3", "--freeze", "no_such_layer*", "--epochs", "1"], "no_such_layer"),
])
def test_errors_are_one_line_and_status_2(argv, fragment, bases, tmp_path, capsys):
    data, _, _ = write_data("multiclass", tmp_path)
    argv = [a.format(base=bases["multiclass"], data=data) for a in argv]
    assert main(["finetune", *argv, "--run-dir", str(tmp_path / "run"), "--quiet"], report_unexpected=True) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("modelkeep: error: ") and fragment in err[0], err


RESUMABLE = ["--head", "3", "--epochs", "8", "--batch-size", "16", "--learning-rate", "0.01", "--seed", "4",
             "--unfreeze-every", "3", "--discriminative", "0.5", "--l2sp", "0.01", "--l2sp-beta", "0.001",
             "--set", "deterministic=true", "--set", "device=cpu", "--set", "checkpoint.every_steps=10",
             "--set", "checkpoint.durable=false", "--set", "optimizer=adam", "--quiet"]


def _final(run_dir: Path):
    history = json.loads((run_dir / "history.json").read_text())
    history.pop("time")
    return read_tensors(run_dir / "model.safetensors"), history, json.loads((run_dir / "metrics.json").read_text())


def _newest_step(folder: Path) -> int:
    from modelkeep.checkpoint.storage import step_of

    return max((step_of(p.name) or 0 for p in folder.glob("checkpoint-*.safetensors")), default=0)


def test_sigkilled_finetune_run_again_resumes_bit_identical(bases, tmp_path):
    data, _, _ = write_data("multiclass", tmp_path, n=400)
    base = str(bases["multiclass"])
    assert main(["finetune", base, str(data), *RESUMABLE, "--run-dir", str(tmp_path / "reference")]) == 0
    reference = _final(tmp_path / "reference")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "modelkeep", "finetune", base, str(data), *RESUMABLE, "--run-dir", str(run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + 120
    # 20 steps an epoch: step 70 is in epoch 4, after the first layer joined the training at epoch 3
    while _newest_step(run_dir / "checkpoints") < 70 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.kill()  # SIGKILL: no handler runs, nothing is flushed
    process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before the kill")
    assert not (run_dir / "model.safetensors").exists()
    resumed = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    resumed_at = int(resumed.stdout.split("resuming from checkpoint-")[1][:9])
    assert resumed_at >= 60  # mid-run, after gradual unfreezing had begun (epoch 4 starts at step 61)
    tensors, history, metrics = _final(run_dir)
    assert set(tensors) == set(reference[0]) and all(torch.equal(tensors[k], reference[0][k]) for k in tensors)
    assert history == reference[1] and metrics == reference[2]


def test_params_shows_a_specs_frozen_layers_and_a_files_discriminative_rates(bases, tmp_path, capsys):
    import yaml

    from task_specs import dense_spec

    spec = dense_spec(4, 3)
    spec["layers"][1]["trainable"] = False
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["params", str(tmp_path / "spec.yaml"), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["layers"]}
    assert rows["dense_1"]["frozen"] is True and rows["head"]["frozen"] is False
    assert main(["params", str(tmp_path / "spec.yaml")]) == 0
    assert "frozen" in capsys.readouterr().out
    data, _, _ = write_data("multiclass", tmp_path)
    out = tmp_path / "tuned.safetensors"
    assert main(["finetune", str(bases["multiclass"]), str(data), "--head", "3", "--discriminative", "0.5",
                 "--learning-rate", "0.01", "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["params", str(out), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["layers"]}
    assert rows["head"]["learning_rate"] == pytest.approx(0.01)
    assert rows["dense_1"]["learning_rate"] == pytest.approx(0.005)  # 0.01 * 0.5 ** (2 - 1)
    assert not rows["dense_1"]["frozen"]


def test_the_command_and_the_config_it_stands_for_give_the_same_model(bases, tmp_path, capsys):
    import yaml

    data, _, _ = write_data("multiclass", tmp_path)
    flags = ["--head", "3", "--freeze", "0", "--discriminative", "0.5", "--l2sp", "0.01", "--epochs", "2",
             "--seed", "2"]
    assert main(["finetune", str(bases["multiclass"]), str(data), *flags, "--run-dir", str(tmp_path / "cli"),
                 "--quiet"]) == 0
    config = {"base": str(bases["multiclass"]), "data": {"path": str(data)}, "epochs": 2, "seed": 2,
              "transfer": {"head": 3, "freeze": [0], "discriminative": 0.5, "l2sp": 0.01}}
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "finetune.yaml"), "--run-dir", str(tmp_path / "config"), "--quiet"]) == 0
    one = read_tensors(tmp_path / "cli" / "model.safetensors")
    other = read_tensors(tmp_path / "config" / "model.safetensors")
    weights = [k for k in one if not k.startswith("__")]
    assert weights and all(torch.equal(one[k], other[k]) for k in weights)


def test_sigterm_saves_and_prints_the_finetune_command_that_resumes(bases, tmp_path, monkeypatch, capsys):
    import re
    import shlex
    import signal

    from modelkeep.cli import train as train_command

    data, _, _ = write_data("multiclass", tmp_path, n=400)
    flags = [str(bases["multiclass"]), str(data), "--head", "3", "--epochs", "4", "--batch-size", "16",
             "--probe-epochs", "1", "--set", "deterministic=true", "--quiet"]  # the body joins at epoch 2
    assert main(["finetune", *flags, "--run-dir", str(tmp_path / "reference")]) == 0
    reference = _final(tmp_path / "reference")

    def terminate(self, state, logs):
        if state.step == 30:
            os.kill(os.getpid(), signal.SIGTERM)

    run_dir = tmp_path / "run dir"  # a space: the printed command must quote it
    with monkeypatch.context() as patch:
        patch.setattr(train_command._ResumeNotice, "on_step_end", terminate, raising=False)
        assert main(["finetune", *flags, "--run-dir", str(run_dir)]) == 128 + signal.SIGTERM
    match = re.search(r"Resume with: (.+)", capsys.readouterr().err)
    assert match
    command = shlex.split(match.group(1))
    assert command[:2] == ["modelkeep", "finetune"] and str(run_dir) in command
    assert main(command[1:]) == 0
    assert "resuming from checkpoint-" in capsys.readouterr().out
    tensors, history, metrics = _final(run_dir)
    assert all(torch.equal(tensors[k], reference[0][k]) for k in reference[0])
    assert history == reference[1] and metrics == reference[2]

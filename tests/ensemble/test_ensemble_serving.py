"""Ensembles exported and served like any model (issue 15, item 1): ``modelkeep export E --format onnx`` passes
onnxruntime parity for every method and task kind, an ensemble of shared tensors exports them once, and
``modelkeep.serve``'s app answers V2 infer for ensembles (run in onnxruntime, and in PyTorch) as their own
``predict`` does, for binary one-logit, multi-class, regression and token-sequence members."""
from __future__ import annotations

import json

import numpy as np
import pytest

from modelkeep import load
from modelkeep.ensemble import ensemble

from ensemble_members import TASKS, train_members

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served_members")
    return {task: train_members(task, folder) for task in TASKS}


def _options(task, method):
    if method == "stacking":
        return {"validation": TASKS[task][0](np.random.default_rng(7), 120)}
    return {"weights": [1, 2, 1]} if method == "weighted" else {}


CLI_CASES = [("multiclass", m) for m in ("average", "weighted", "soft-vote", "majority", "stacking")] + [
    ("binary_one_logit", "stacking"), ("binary_one_logit", "majority"), ("regression", "stacking"),
    ("token_sequence", "stacking"), ("token_sequence", "soft-vote")]


@pytest.mark.parametrize("task,method", CLI_CASES)
def test_the_export_command_passes_parity_for_every_method(members, task, method, tmp_path, capsys):
    from modelkeep.cli.main import main

    paths, x, y = members[task]
    out = ensemble(paths, tmp_path / "E.safetensors", method=method, durable=False, **_options(task, method))
    np.savez(tmp_path / "check.npz", x=x[:16], y=y[:16])
    extra = [] if task == "regression" else ["--probabilities"]
    status = main(["export", str(out), str(tmp_path / "E.onnx"), "--format", "onnx", *extra,
                   "--data", str(tmp_path / "check.npz"), "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] is not None and report["max_abs_diff"] <= 1e-5, report


def test_shared_tensors_are_exported_once(tmp_path):
    from modelkeep import fit, save
    from modelkeep.data import dataset_from_arrays
    from modelkeep.export import export_onnx
    from modelkeep.nn import build

    from task_specs import multiclass_data
    from test_ensemble_shared import BODY

    rng = np.random.default_rng(0)
    train = dataset_from_arrays(*multiclass_data(rng, 60), name="train")
    paths = []
    for seed in range(3):
        model = build(BODY, seed=0)
        model.layers["body"].requires_grad_(False)
        model.layers["neck"].requires_grad_(False)
        paths.append(save(fit(model, train, epochs=1, progress=False, seed=seed), tmp_path / f"t{seed}.safetensors",
                          durable=False))
    one = export_onnx(paths[0], tmp_path / "one.onnx").path.stat().st_size
    result = export_onnx(ensemble(paths, tmp_path / "e.safetensors", durable=False), tmp_path / "e.onnx")
    assert result.max_abs_diff <= 1e-5
    assert result.path.stat().st_size < 1.2 * one, (result.path.stat().st_size, one)


SERVED = {"binary_one_logit": "average", "multiclass": "stacking", "regression": "weighted",
          "token_sequence": "majority"}
INPUT_NAMES = {"token_sequence": "tokens"}


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_the_server_answers_v2_infer_like_the_ensembles_predict(members, tmp_path, backend):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from modelkeep.serve import ServeSettings, create_app

    files = {task: ensemble(members[task][0], tmp_path / f"{task}.safetensors", method=method, durable=False,
                            **_options(task, method)) for task, method in SERVED.items()}
    settings = ServeSettings(sources=tuple(str(p) for p in files.values()), max_queue_delay_us=1000, backend=backend)
    with TestClient(create_app(settings)) as client:
        for task, path in files.items():
            rows = members[task][1][:5]
            datatype = "INT64" if rows.dtype == np.int64 else "FP32"
            request = {"inputs": [{"name": INPUT_NAMES.get(task, "input_1"), "shape": list(rows.shape),
                                   "datatype": datatype, "data": rows.reshape(-1).tolist()}]}
            response = client.post(f"/v2/models/{task}/infer", json=request)
            assert response.status_code == 200, response.text
            outputs = {o["name"]: np.reshape(o["data"], o["shape"]) for o in response.json()["outputs"]}
            prediction = load(path).predict(rows)
            if task == "regression":
                np.testing.assert_allclose(outputs["head"], prediction.values, rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_allclose(outputs["probabilities"], prediction.probabilities, rtol=1e-5, atol=1e-6)

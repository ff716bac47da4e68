"""The onnxruntime backend: every task kind answers through it as through eager PyTorch (within the export's
tolerance), through V2 infer and V1 predict, with the saved pre- and post-processing applied around it; a model
the exporter refuses falls back to eager PyTorch with the reason logged, or stops the start-up when onnxruntime
was demanded."""
from __future__ import annotations

import logging
import os
import tempfile
import textwrap

import numpy as np
import pytest

from serve_models import TASKS, rows_for, v2_request
from modelkeep.errors import ConfigError

pytest.importorskip("onnxruntime")

NAMES = [*TASKS, "digits"]
TOLERANCE = 1e-4  # modelkeep.export.onnx.DEFAULT_TOLERANCE: what the export's parity check allows


def _client(files, **options):
    from fastapi.testclient import TestClient

    from modelkeep.serve import ServeSettings, create_app

    settings = ServeSettings(sources=tuple(str(p) for p in files), max_queue_delay_us=1000, **options)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def both(model_files):
    """Two apps serving the whole task matrix: one that must run onnxruntime, one on eager PyTorch."""
    with _client(model_files.values(), backend="onnxruntime", onnx_threads=1) as ort, \
            _client(model_files.values(), backend="torch") as eager:
        yield ort, eager


@pytest.mark.parametrize("name", NAMES)
def test_v2_infer_answers_as_eager_pytorch_and_predict_within_the_tolerance(both, model_files, name):
    from modelkeep import load

    ort, eager = both
    assert ort.app.state.table.get(name).backend.name == "onnxruntime"
    assert eager.app.state.table.get(name).backend.name == "torch"
    rows = rows_for(name, 7, seed=3)
    answers = []
    for client in both:
        response = client.post(f"/v2/models/{name}/infer", json=v2_request(name, rows))
        assert response.status_code == 200, response.text
        answers.append({o["name"]: np.reshape(o["data"], o["shape"]) for o in response.json()["outputs"]})
    assert answers[0].keys() == answers[1].keys()
    for output in answers[0]:
        np.testing.assert_allclose(answers[0][output], answers[1][output], rtol=TOLERANCE, atol=TOLERANCE)
    prediction = load(model_files[name]).predict(rows)
    if "probabilities" in answers[0]:  # the post-processing ran after the session, on its logits
        np.testing.assert_allclose(answers[0]["probabilities"], prediction.probabilities, atol=TOLERANCE)


@pytest.mark.parametrize("name", NAMES)
def test_v1_predict_answers_as_eager_pytorch(both, model_files, name):
    from modelkeep import load

    rows = rows_for(name, 5, seed=4)
    bodies = []
    for client in both:
        response = client.post(f"/v1/models/{name}/predict", json={"instances": rows.tolist()})
        assert response.status_code == 200, response.text
        bodies.append(response.json()["predictions"])
    ort, eager = bodies
    prediction = load(model_files[name]).predict(rows)
    if name == "regression":
        np.testing.assert_allclose([p["value"] for p in ort], [p["value"] for p in eager], rtol=TOLERANCE,
                                   atol=TOLERANCE)
        np.testing.assert_allclose([p["value"] for p in ort], prediction.values, rtol=TOLERANCE, atol=TOLERANCE)
        return
    assert [p["label"] for p in ort] == [p["label"] for p in eager] == list(prediction.labels)
    np.testing.assert_allclose([p["probability"] for p in ort], [p["probability"] for p in eager], atol=TOLERANCE)


def test_the_saved_preprocessing_runs_once_before_the_session(both):
    """multiclass has a saved Standardize (mean ~5, scale ~3): skipped or applied twice, answers move by far
    more than the tolerance."""
    served = both[0].app.state.table.get("multiclass")
    model = served.model
    assert model.preprocessing is not None
    rows = rows_for("multiclass", 6, seed=5)
    raw = served.network(rows)[0]  # the bare network: what it gives on rows that were not preprocessed
    logits = both[0].post("/v2/models/multiclass/infer", json=v2_request("multiclass", rows)).json()["outputs"][0]
    served_logits = np.reshape(logits["data"], logits["shape"])
    expected = served.network(np.asarray(model.preprocessing.transform(rows), np.float32))[0]
    np.testing.assert_allclose(served_logits, expected, atol=TOLERANCE)
    assert np.abs(served_logits - raw).max() > 100 * TOLERANCE


def test_metadata_reports_the_platform_in_use(both):
    ort, eager = both
    assert ort.app.state.table.get("binary").platform == "onnxruntime_onnx"
    assert eager.app.state.table.get("binary").platform == "pytorch"
    assert ort.get("/v2/models/binary").json()["platform"] == "onnxruntime_onnx"
    assert eager.get("/v2/models/binary").json()["platform"] == "pytorch"


def test_the_session_uses_the_configured_threads_and_the_export_leaves_no_file(model_files, tmp_path, monkeypatch):
    from modelkeep.serve import ServeSettings
    from modelkeep.serve.table import ModelTable

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    table = ModelTable.load(ServeSettings(sources=(str(model_files["binary"]),), onnx_threads=2))
    network = table.get("binary").backend.network
    assert network.session.get_session_options().intra_op_num_threads == 2
    assert network.session.get_providers() == ["CPUExecutionProvider"]
    assert os.listdir(scratch) == []


# an op PyTorch's ONNX exporter has no translation for (aten::cummax): the export fails at conversion
UNEXPORTABLE = '''
import torch

class RunningMax(torch.nn.Module):
    def __init__(self, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(features, classes)

    def forward(self, x):  # (B, features) -> (B, classes)
        return torch.cummax(self.linear(x), dim=1).values
'''


@pytest.fixture(scope="module")
def unexportable(tmp_path_factory):
    import sys

    import torch

    from modelkeep import save

    folder = tmp_path_factory.mktemp("unexportable")
    (folder / "running_max_model.py").write_text(textwrap.dedent(UNEXPORTABLE))
    sys.path.insert(0, str(folder))
    try:
        import running_max_model

        torch.manual_seed(0)
        path = save(running_max_model.RunningMax(), folder / "runningmax.safetensors", example_input=torch.zeros(2, 4),
                    task="classification", labels=["a", "b", "c"], durable=False)
        yield path
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("running_max_model", None)


def test_a_model_the_exporter_refuses_falls_back_to_eager_pytorch_with_the_reason(unexportable, caplog):
    from modelkeep import load

    with caplog.at_level(logging.INFO, logger="modelkeep.serve"), _client([unexportable], trust_code=True) as client:
        served = client.app.state.table.get("runningmax")
        assert served.backend.name == "torch" and served.platform == "pytorch"
        assert "ExportError" in served.backend.reason and "could not export" in served.backend.reason
        assert "\x1b" not in served.backend.reason  # the exporter's colours are stripped
        rows = rows_for("multiclass", 4, seed=6)
        response = client.post("/v2/models/runningmax/infer",
                               json={"inputs": [{"name": "input", "shape": [4, 4], "datatype": "FP32",
                                                 "data": rows.ravel().tolist()}]})
        assert response.status_code == 200, response.text
        model = load(unexportable, trust_code=True)
        probabilities = next(o for o in response.json()["outputs"] if o["name"] == "probabilities")
        np.testing.assert_allclose(np.reshape(probabilities["data"], probabilities["shape"]),
                                   model.predict(rows).probabilities, rtol=1e-5, atol=1e-6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("runningmax" in m and "eager PyTorch: ExportError" in m for m in warnings), warnings


def test_demanding_onnxruntime_for_a_model_it_cannot_run_stops_the_start_up(unexportable):
    from modelkeep.serve import ServeSettings, create_app

    with pytest.raises(ConfigError,
                       match=r"cannot serve .*runningmax.* with onnxruntime: ExportError: .*--backend auto"):
        create_app(ServeSettings(sources=(str(unexportable),), trust_code=True, backend="onnxruntime"))


def test_a_model_on_another_device_stays_on_pytorch_under_auto():
    import torch

    from modelkeep.serve.onnx_runner import choose_backend

    class Stub:  # choose_backend reads only .module before deciding on the device
        module = torch.nn.Linear(2, 2)

    backend = choose_backend(Stub(), backend="auto", device="cuda")
    assert backend.name == "torch" and "runs on 'cuda'" in backend.reason
    with pytest.raises(ConfigError, match="runs on 'cuda'"):
        choose_backend(Stub(), backend="onnxruntime", device="cuda")


@pytest.mark.parametrize(("options", "message"), [({"backend": "tensorrt"}, "backend must be one of"),
                                                  ({"onnx_threads": 0}, "onnx_threads must be")])
def test_bad_backend_settings_are_refused(options, message):
    from modelkeep.serve import ServeSettings

    with pytest.raises(ConfigError, match=message):
        ServeSettings(sources=("a.safetensors",), **options)


def test_the_command_line_passes_the_backend_options(monkeypatch):
    import modelkeep.serve.server
    from modelkeep.cli.main import main

    logger = logging.getLogger("modelkeep.serve")
    monkeypatch.setattr(logger, "handlers", [])  # restored afterwards: the command installs its own handler
    monkeypatch.setattr(logger, "level", logger.level)
    seen = []
    monkeypatch.setattr(modelkeep.serve.server, "run_server", lambda settings, **_: seen.append(settings))
    assert main(["serve", "m.safetensors", "--backend", "torch", "--onnx-threads", "3"]) == 0
    assert seen[0].backend == "torch" and seen[0].onnx_threads == 3
    assert main(["serve", "m.safetensors"]) == 0
    assert seen[1].backend == "auto" and seen[1].onnx_threads is None
    assert len(logger.handlers) == 1 and logger.level == logging.INFO  # which backend each model got is shown

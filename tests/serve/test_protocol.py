"""Every endpoint's request and response shapes, as the Open Inference Protocol (KServe V2) and KServe V1
document them, over the task matrix; answers equal to ``modelkeep.load(path).predict``."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from serve_models import TASKS, rows_for, v2_request

MATRIX = [*TASKS, "digits"]
V2_DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                "FP64", "BYTES"}


def test_health_and_server_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "modelkeep" and isinstance(server["version"], str)
    assert isinstance(server["extensions"], list)


@pytest.mark.parametrize("name", MATRIX)
def test_model_metadata_follows_the_signature(client, name, model_files):
    from modelkeep import load

    metadata = client.get(f"/v2/models/{name}").json()
    assert set(metadata) == {"name", "versions", "platform", "inputs", "outputs"}
    assert metadata["name"] == name and metadata["platform"] == "onnxruntime_onnx"  # --backend auto: the export passed parity
    model = load(model_files[name])
    assert metadata["versions"] == [model.content_hash.partition(":")[2][:12]]
    (tensor,) = metadata["inputs"]
    assert set(tensor) == {"name", "datatype", "shape"}
    assert tensor["datatype"] == ("INT64" if name == "tokens" else "FP32")
    assert tensor["shape"] == [-1, *model.manifest.signature["inputs"][0]["shape"][1:]]
    outputs = {t["name"]: t for t in metadata["outputs"]}
    assert all(t["datatype"] in V2_DATATYPES and t["shape"][0] == -1 for t in outputs.values())
    assert ("probabilities" in outputs) == (name != "regression")
    if name == "binary":
        assert outputs["probabilities"]["shape"] == [-1, 2]
    version = metadata["versions"][0]
    assert client.get(f"/v2/models/{name}/versions/{version}").json() == metadata
    assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    assert client.get(f"/v2/models/{name}/versions/{version}/ready").json() == {"name": name, "ready": True}
    assert client.get(f"/v1/models/{name}").json() == {"name": name, "ready": True}


@pytest.mark.parametrize("name", MATRIX)
def test_v2_infer_answers_what_predict_answers(client, name, model_files):
    import torch

    from modelkeep import load

    rows = rows_for(name, 5)
    response = client.post(f"/v2/models/{name}/infer", json=v2_request(name, rows, id="request-7"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model_name", "model_version", "id", "outputs"}
    assert body["model_name"] == name and body["id"] == "request-7"
    outputs = {o["name"]: o for o in body["outputs"]}
    for output in outputs.values():
        assert set(output) == {"name", "shape", "datatype", "data"} and output["datatype"] == "FP32"
        assert len(output["data"]) == int(np.prod(output["shape"]))
    model = load(model_files[name])
    prediction = model.predict(rows)
    if name == "regression":
        np.testing.assert_allclose(np.reshape(outputs["head"]["data"], outputs["head"]["shape"]),
                                   prediction.values, rtol=1e-5, atol=1e-6)
        return
    probabilities = np.reshape(outputs["probabilities"]["data"], outputs["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities, prediction.probabilities, rtol=1e-5, atol=1e-6)
    logits_name = next(n for n in outputs if n != "probabilities")
    x = model.preprocessing.transform(rows) if model.preprocessing is not None else rows
    with torch.no_grad():
        expected = model.module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    np.testing.assert_allclose(np.reshape(outputs[logits_name]["data"], outputs[logits_name]["shape"]), expected,
                               rtol=1e-5, atol=1e-5)


def test_v2_infer_by_version_nested_data_and_chosen_outputs(client):
    rows = rows_for("multiclass", 3)
    version = client.get("/v2/models/multiclass").json()["versions"][0]
    request = v2_request("multiclass", rows, outputs=[{"name": "probabilities"}])
    request["inputs"][0]["data"] = rows.tolist()  # nested, row-major: the protocol allows it
    body = client.post(f"/v2/models/multiclass/versions/{version}/infer", json=request).json()
    assert [o["name"] for o in body["outputs"]] == ["probabilities"]
    assert body["model_version"] == version and "id" not in body
    flat = client.post("/v2/models/multiclass/infer", json=v2_request("multiclass", rows)).json()
    assert flat["outputs"][1]["data"] == body["outputs"][0]["data"]


@pytest.mark.parametrize("name", MATRIX)
def test_v1_predict_answers_what_predict_answers(client, name, model_files):
    from modelkeep import load

    rows = rows_for(name, 4, seed=3)
    response = client.post(f"/v1/models/{name}/predict?top=2", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model_name", "model_version", "predictions"} and len(body["predictions"]) == 4
    prediction = load(model_files[name]).predict(rows)
    if name == "regression":
        np.testing.assert_allclose([p["value"] for p in body["predictions"]], prediction.values, rtol=1e-5)
        return
    assert [p["label"] for p in body["predictions"]] == list(prediction.labels)
    np.testing.assert_allclose([p["probability"] for p in body["predictions"]],
                               prediction.probabilities.max(axis=1), rtol=1e-5)
    assert all(len(p["top"]) == 2 and p["top"][0]["label"] == p["label"] for p in body["predictions"])


def test_v1_predict_takes_flat_rows_an_image_and_a_csv(client, model_files):
    from PIL import Image

    from modelkeep import load

    model = load(model_files["digits"])
    rows = rows_for("digits", 2)
    flat = client.post("/v1/models/digits/predict", json={"instances": rows.reshape(2, -1).tolist()}).json()
    assert [p["label"] for p in flat["predictions"]] == list(model.predict(rows).labels)

    pixels = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    image = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(image, format="PNG")
    response = client.post("/v1/models/digits/predict", files={"file": ("seven.png", image.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    expected = model.predict(pixels.astype(np.float32)[None, None])
    assert response.json()["predictions"][0]["label"] == expected.labels[0]

    table = rows_for("binary", 3)
    csv = "f1,f2,f3,f4\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in table)
    response = client.post("/v1/models/binary/predict", files={"file": ("rows.csv", csv.encode(), "text/csv")})
    assert response.status_code == 200, response.text
    expected = load(model_files["binary"]).predict(table)
    assert [p["label"] for p in response.json()["predictions"]] == list(expected.labels)


def test_metrics_and_openapi(client):
    client.post("/v2/models/binary/infer", json=v2_request("binary", rows_for("binary", 2)))
    text = client.get("/metrics").text
    assert 'modelkeep_requests_total{endpoint="/v2/models/{name}/infer",model="binary",status="200"}' in text
    assert "modelkeep_request_duration_seconds_bucket" in text and "modelkeep_batch_size_bucket" in text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v2/models/{name}/infer", "/v1/models/{name}/predict", "/v2/health/ready"} <= set(paths)
    assert "requestBody" in paths["/v2/models/{name}/infer"]["post"]


def test_serving_imports_neither_training_nor_checkpoints(model_files):
    code = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from modelkeep.serve import ServeSettings, create_app
        with TestClient(create_app(ServeSettings(sources=({str(model_files['binary'])!r},)))) as client:
            assert client.post("/v1/models/binary/predict", json={{"instances": [[1, 2, 3, 4]]}}).status_code == 200
        print(",".join(sorted(m for m in sys.modules if m.startswith(("modelkeep.train", "modelkeep.checkpoint")))))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_binary_tensor_data_in_and_out(client, model_files):
    from modelkeep import load

    rows = rows_for("multiclass", 3)
    header = {"inputs": [{"name": "input_1", "shape": [3, 4], "datatype": "FP32",
                          "parameters": {"binary_data_size": rows.nbytes}}],
              "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "head"}]}
    document = json.dumps(header).encode()
    response = client.post("/v2/models/multiclass/infer", content=document + rows.astype("<f4").tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(document))})
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    probabilities, head = answer["outputs"]
    assert "data" not in probabilities and probabilities["parameters"]["binary_data_size"] == 3 * 3 * 4
    assert len(head["data"]) == 9
    values = np.frombuffer(response.content[length:], "<f4").reshape(probabilities["shape"])
    np.testing.assert_allclose(values, load(model_files["multiclass"]).predict(rows).probabilities, rtol=1e-5)


@pytest.mark.parametrize("size, extra, length, words", [
    (47, b"", None, "needs 48 bytes"), (48, b"xx", None, "no input claims"), (96, b"", None, "bytes of binary"),
    (48, b"", "999999", "Inference-Header-Content-Length"), (48, b"", "ab", "Inference-Header-Content-Length"),
])
def test_bad_binary_tensor_data_is_400(client, size, extra, length, words):
    rows = rows_for("multiclass", 3).astype("<f4").tobytes()
    document = json.dumps({"inputs": [{"name": "input_1", "shape": [3, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": size}}]}).encode()
    response = client.post("/v2/models/multiclass/infer", content=document + rows[:size] + extra,
                           headers={"Inference-Header-Content-Length": length or str(len(document))})
    assert response.status_code == 400 and words in response.json()["error"], response.text


def test_settings_travel_to_workers_and_pick_the_device(model_files, monkeypatch):
    from fastapi.testclient import TestClient

    from modelkeep.serve.app import app_from_environment
    from modelkeep.serve.settings import ENVIRONMENT_VARIABLE, ServeSettings

    settings = ServeSettings(sources=(str(model_files["regression"]),), api_keys=("k",), device="cpu", workers=1)
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, settings.to_environment())
    assert ServeSettings.from_environment() == settings
    with TestClient(app_from_environment()) as worker:
        response = worker.post("/v1/models/regression/predict", json={"instances": [[1, 2, 3]]}, headers={"X-API-Key": "k"})
    assert response.status_code == 200 and "value" in response.json()["predictions"][0]

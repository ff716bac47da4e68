"""``modelkeep serve`` for real: uvicorn in a subprocess on 127.0.0.1, two workers, spoken to over HTTP."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from serve_models import rows_for, v2_request
from modelkeep.cli.main import main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(base: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode(errors="replace")[-3000:]
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become ready")


def test_modelkeep_serve_answers_over_http(model_files, tmp_path):
    from modelkeep import load

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "MODELKEEP_API_KEYS": "test-key", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    environment.pop("OMP_WAIT_POLICY", None)
    command = [sys.executable, "-m", "modelkeep", "serve", str(model_files["multiclass"]), str(model_files["tokens"]),
               "--port", str(port), "--workers", "2", "--max-batch-size", "16", "--max-queue-delay-us", "20000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
    try:
        _wait_ready(base, process)
        # the workers' PyTorch was told to let idle OpenMP threads sleep (set before torch loads)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        environs = [Path(f"/proc/{child}/environ").read_bytes().split(b"\0") for child in children]
        assert any(b"OMP_WAIT_POLICY=PASSIVE" in environ for environ in environs), children
        assert httpx.get(f"{base}/v2/models/tokens").json()["inputs"][0]["datatype"] == "INT64"
        inputs = [rows_for("multiclass", 1 + i % 3, seed=i) for i in range(32)]

        async def callers():
            async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": "test-key"}, timeout=30) as http:
                return await asyncio.gather(*(http.post("/v2/models/multiclass/infer", json=v2_request("multiclass", x))
                                              for x in inputs))

        responses = asyncio.run(callers())
        model = load(model_files["multiclass"])
        for rows, response in zip(inputs, responses):
            assert response.status_code == 200, response.text
            output = {o["name"]: o for o in response.json()["outputs"]}["probabilities"]
            np.testing.assert_allclose(np.reshape(output["data"], output["shape"]), model.predict(rows).probabilities,
                                       rtol=1e-5, atol=1e-6)
        assert httpx.post(f"{base}/v2/models/multiclass/infer", json=v2_request("multiclass", inputs[0])).status_code == 401
        bad = httpx.post(f"{base}/v2/models/multiclass/infer", content=b"{", headers={"X-API-Key": "test-key"})
        assert bad.status_code == 400 and set(bad.json()) == {"error"}
        metrics = httpx.get(f"{base}/metrics").text
        assert 'modelkeep_requests_total{endpoint="/v2/models/{name}/infer",model="multiclass",status="200"} 32.0' \
            in metrics
        count = float(metrics.split('modelkeep_batch_size_count{model="multiclass"} ')[1].split()[0])
        assert count < 32  # batches of several requests ran
        _third_party_client(f"127.0.0.1:{port}", model.predict(inputs[2]).probabilities, inputs[2])
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.startswith("{")]
    logged = [json.loads(line) for line in lines]
    assert any(entry["endpoint"] == "/v2/models/{name}/infer" and entry["status"] == 200 for entry in logged)
    assert "test-key" not in stderr.decode(errors="replace")


def _third_party_client(address: str, expected: np.ndarray, rows: np.ndarray) -> None:
    """Triton's own HTTP client, unchanged: binary tensors by default, JSON when asked."""
    try:
        import tritonclient.http as triton
    except ImportError:  # the test extra installs it; without it the httpx checks above still ran
        return
    client = triton.InferenceServerClient(address)
    assert client.is_server_live() and client.is_model_ready("multiclass")
    assert client.get_model_metadata("multiclass")["inputs"][0]["shape"] == [-1, 4]
    for binary in (True, False):
        tensor = triton.InferInput("input_1", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
        result = client.infer("multiclass", [tensor], outputs=wanted, request_id="t-1",
                              headers={"X-API-Key": "test-key"})  # a fresh dict: the client writes into it
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
        assert result.get_response()["id"] == "t-1"
    client.close()


def test_a_bad_source_fails_before_serving(tmp_path, capsys, model_files):
    assert main(["serve", str(tmp_path / "missing.safetensors")], report_unexpected=True) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "x.safetensors"), "--max-batch-size", "0"], report_unexpected=True) == 2
    assert "max_batch_size" in capsys.readouterr().err
    twice = str(model_files["binary"])
    assert main(["serve", twice, twice], report_unexpected=True) == 2
    assert "two sources are both named 'binary'" in capsys.readouterr().err

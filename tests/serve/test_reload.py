"""What is served does not change under the server's feet: files are read into private memory; a registry
alias that moves is followed, and the requests in flight at the swap are all answered."""
from __future__ import annotations

import asyncio
import shutil

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_models import rows_for, save_task_model, v2_request
from modelkeep.serve import ServeSettings, create_app


def _probabilities(response) -> list:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}["probabilities"]["data"]


def test_overwriting_or_deleting_the_file_while_serving_changes_nothing(tmp_path):
    path = save_task_model("multiclass", tmp_path / "multiclass.safetensors", seed=0)
    other = save_task_model("multiclass", tmp_path / "other.safetensors", seed=5)
    request = v2_request("multiclass", rows_for("multiclass", 4))
    with TestClient(create_app(ServeSettings(sources=(str(path),)))) as client:
        before = _probabilities(client.post("/v2/models/multiclass/infer", json=request))
        with open(path, "r+b") as handle:  # in place, as a careless copy would: the bytes a memory map would see
            handle.write(other.read_bytes()[: path.stat().st_size])
        assert _probabilities(client.post("/v2/models/multiclass/infer", json=request)) == before
        path.unlink()
        shutil.copy(other, path)
        assert _probabilities(client.post("/v2/models/multiclass/infer", json=request)) == before
        version = client.get("/v2/models/multiclass").json()["versions"]
        assert client.get("/v2/models/multiclass").json()["versions"] == version


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELKEEP_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("MODELKEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_a_registry_alias_is_served_and_followed_without_dropping_requests(registry):
    from modelkeep import registry as api
    from modelkeep.serve.app import create_app as build

    first = api.push(save_task_model("binary", registry / "b0.safetensors", seed=0), "churn", alias="production")
    second = api.push(save_task_model("binary", registry / "b1.safetensors", seed=1), "churn")
    app = build(ServeSettings(sources=("registry://churn@production",), max_queue_delay_us=2000))
    table = app.state.table
    rows = rows_for("binary", 2)
    request = v2_request("binary", rows)

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as http:
            metadata = (await http.get("/v2/models/churn")).json()
            before = _probabilities(await http.post("/v2/models/churn/infer", json=request))
            assert await table.refresh("registry://churn@production") is False
            api.set_alias("churn", second.id, "production")
            during = [asyncio.ensure_future(http.post("/v2/models/churn/infer", json=request)) for _ in range(20)]
            await asyncio.sleep(0)
            moved = await table.refresh("registry://churn@production")
            during += [asyncio.ensure_future(http.post("/v2/models/churn/infer", json=request)) for _ in range(5)]
            answers = await asyncio.gather(*during)
            after = _probabilities(await http.post("/v2/models/churn/infer", json=request))
            return metadata, before, moved, answers, after, (await http.get("/v2/models/churn")).json()

    metadata, before, moved, answers, after, metadata_after = asyncio.run(scenario())
    assert metadata["versions"] == [first.id[:12]] and metadata_after["versions"] == [second.id[:12]]
    assert moved is True and before != after
    assert all(response.status_code == 200 for response in answers)  # none dropped across the swap
    for response in answers:  # each from one version or the other (batched rows may differ in the last bits)
        got = np.asarray(_probabilities(response))
        assert np.allclose(got, before, atol=1e-6) or np.allclose(got, after, atol=1e-6)
    model = __import__("modelkeep").load(f"registry://churn:{second.id}")
    np.testing.assert_allclose(np.reshape(after, (2, 2)), model.predict(rows).probabilities, rtol=1e-5)


def test_follow_alias_polls_in_the_background(registry):
    import time

    from modelkeep import registry as api

    api.push(save_task_model("regression", registry / "r0.safetensors", seed=0), "price", alias="live")
    second = api.push(save_task_model("regression", registry / "r1.safetensors", seed=1), "price")
    settings = ServeSettings(sources=("registry://price@live",), follow_alias_seconds=0.05)
    with TestClient(create_app(settings)) as client:
        api.set_alias("price", second.id, "live")
        deadline = time.monotonic() + 10
        while client.get("/v2/models/price").json()["versions"] != [second.id[:12]]:
            assert time.monotonic() < deadline, "the alias move was not followed"
            time.sleep(0.05)
        response = client.post("/v1/models/price/predict", json={"instances": [[1.0, 2.0, 3.0]]})
        assert response.status_code == 200 and response.json()["model_version"] == second.id[:12]


def test_an_app_started_again_after_a_shutdown_serves_again(model_files):
    """A second lifespan of the same app (a test client reopened, an ASGI host restarting it) must not answer
    500 because the first shutdown closed the batchers."""
    from fastapi.testclient import TestClient

    from modelkeep.serve import ServeSettings, create_app

    app = create_app(ServeSettings(sources=(str(model_files["regression"]),), max_queue_delay_us=0))
    body = {"instances": [[0.1, 0.2, 0.3]]}
    answers = []
    for _ in range(2):
        with TestClient(app) as client:
            response = client.post("/v1/models/regression/predict", json=body)
            assert response.status_code == 200, response.text
            answers.append(response.json()["predictions"])
    assert answers[0] == answers[1]

"""The management endpoints (Triton's model-repository extension, the part that fits): index, load, unload --
always behind a management key, and only for the names given at start-up."""
from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from serve_models import rows_for, save_task_model, v2_request
from modelkeep.errors import ConfigError
from modelkeep.serve import ServeSettings, create_app

ADMIN, USER = "admin-key-0123", "user-key-4567"


def _settings(*paths, **options) -> ServeSettings:
    return ServeSettings(sources=tuple(str(p) for p in paths), backend="torch", management=True,
                         management_keys=(ADMIN,), **options)


def _admin(key: str = ADMIN) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_enabling_management_without_a_key_is_refused(tmp_path, capsys):
    from modelkeep.cli.main import main

    path = save_task_model("binary", tmp_path / "binary.safetensors")
    with pytest.raises(ConfigError, match="management endpoints need a key"):
        ServeSettings(sources=(str(path),), management=True)
    assert main(["serve", str(path), "--management", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--management-key" in err, err


def test_without_management_the_routes_do_not_exist(model_files):
    app = create_app(ServeSettings(sources=(str(model_files["binary"]),), backend="torch"))
    with TestClient(app) as client:
        assert client.post("/v2/repository/index", headers=_admin()).status_code == 404
        assert "model_repository" not in client.get("/v2").json()["extensions"]


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"X-API-Key": "wrong"}, 401), (_admin(USER), 403), ({"X-API-Key": USER}, 403),
    ({"Authorization": "Bearer"}, 401), (_admin(), 200), ({"X-API-Key": ADMIN}, 200)])
def test_every_management_call_needs_a_management_key(model_files, headers, status):
    app = create_app(_settings(model_files["binary"], api_keys=(USER,)))
    with TestClient(app) as client:
        for path in ("/v2/repository/index", "/v2/repository/models/binary/unload",
                     "/v2/repository/models/binary/load", "/v2/repository/models/nosuch/load"):
            response = client.post(path, headers=headers)
            expected = 404 if status == 200 and "nosuch" in path else status
            assert response.status_code == expected, (path, response.text)
            if status == 401:
                assert response.headers["www-authenticate"] == "Bearer"
        # an inference key opens inference, a management key does not
        request = v2_request("binary", rows_for("binary", 1))
        assert client.post("/v2/models/binary/infer", json=request, headers=_admin(USER)).status_code == 200
        assert client.post("/v2/models/binary/infer", json=request, headers=_admin()).status_code == 401


def test_index_unload_and_load_again_from_the_start_up_file(tmp_path):
    path = save_task_model("multiclass", tmp_path / "multiclass.safetensors", seed=0)
    other = save_task_model("multiclass", tmp_path / "other.safetensors", seed=5)
    request = v2_request("multiclass", rows_for("multiclass", 2))
    with TestClient(create_app(_settings(path))) as client:
        assert client.get("/v2").json()["extensions"] == ["binary_tensor_data", "model_repository"]
        index = client.post("/v2/repository/index", headers=_admin()).json()
        version = index[0]["version"]
        assert index == [{"name": "multiclass", "version": version, "state": "READY", "reason": ""}]
        before = client.post("/v2/models/multiclass/infer", json=request).json()

        assert client.post("/v2/repository/models/multiclass/unload", headers=_admin()).status_code == 200
        refused = client.post("/v2/models/multiclass/infer", json=request)
        assert refused.status_code == 404 and "unloaded" in refused.json()["error"]
        assert client.get("/v2/health/ready").json() == {"ready": False}
        index = client.post("/v2/repository/index", headers=_admin(), json={}).json()
        assert index == [{"name": "multiclass", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}]
        assert client.post("/v2/repository/index", headers=_admin(), json={"ready": True}).json() == []

        shutil.copy(other, path)  # a new file at the start-up path: load reads it again
        loaded = client.post("/v2/repository/models/multiclass/load", headers=_admin())
        assert loaded.status_code == 200 and loaded.json()["version"] != version
        after = client.post("/v2/models/multiclass/infer", json=request).json()
        assert after["model_version"] == loaded.json()["version"] and after["outputs"] != before["outputs"]


def test_a_load_request_cannot_name_a_path_and_a_failed_load_keeps_the_old_version(tmp_path):
    path = save_task_model("regression", tmp_path / "regression.safetensors")
    elsewhere = save_task_model("binary", tmp_path / "elsewhere.safetensors")
    with TestClient(create_app(_settings(path))) as client:
        version = client.get("/v2/models/regression").json()["versions"]
        for body in ({"parameters": {"config": "{}"}}, {"parameters": {"file:1/model.onnx": "AAAA"}},
                     {"path": str(elsewhere)}, [1, 2]):
            response = client.post("/v2/repository/models/regression/load", headers=_admin(), json=body)
            assert response.status_code == 400, (body, response.text)
        assert client.post(f"/v2/repository/models/elsewhere/load", headers=_admin()).status_code == 404
        assert client.post("/v2/repository/models/..%2Felsewhere/load", headers=_admin()).status_code == 404
        path.write_bytes(b"not a model")
        failed = client.post("/v2/repository/models/regression/load", headers=_admin())
        assert failed.status_code == 400 and "keeps serving" in failed.json()["error"], failed.text
        assert client.get("/v2/models/regression").json()["versions"] == version
        assert client.post("/v1/models/regression/predict", json={"instances": [[1, 2, 3]]}).status_code == 200


def test_management_keys_from_a_file(tmp_path):
    from modelkeep.cli.serve import _keys_file

    keys = tmp_path / "keys"
    keys.write_text("# the operators\nfirst-key\n\n  second-key  \n")
    assert _keys_file(str(keys)) == ["first-key", "second-key"]
    keys.write_bytes(b"x" * (65 << 10))
    with pytest.raises(ConfigError, match="management keys file"):
        _keys_file(str(keys))

"""``modelkeep serve --require-signature PUB``: every served file, and every version a followed alias moves to,
must carry a signature by the key's pair, checked before it is loaded. At start-up a refusal is one line and
exit status 2; an alias that moves to an unsigned version keeps the old one serving (and says so in the log)."""
from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi.testclient import TestClient

from serve_models import rows_for, save_task_model, v2_request
from modelkeep.errors import SignatureError
from modelkeep.serve import ServeSettings, create_app

pytest.importorskip("model_signing")


@pytest.fixture(scope="module")
def serve_keys(tmp_path_factory):
    from modelkeep.artifact.signing import generate_keys

    folder = tmp_path_factory.mktemp("serve-keys")
    generate_keys(folder / "private.pem", folder / "public.pem")
    generate_keys(folder / "other_private.pem", folder / "other_public.pem")
    return folder


def _signed(path, private):
    from modelkeep.artifact.signing import sign_file

    sign_file(path, private)
    return path


def test_a_signed_file_is_served_and_answers(tmp_path, serve_keys):
    path = _signed(save_task_model("binary", tmp_path / "binary.safetensors"), serve_keys / "private.pem")
    settings = ServeSettings(sources=(str(path),), require_signature=str(serve_keys / "public.pem"), backend="torch")
    with TestClient(create_app(settings)) as client:
        response = client.post("/v2/models/binary/infer", json=v2_request("binary", rows_for("binary", 2)))
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("how", ["unsigned", "other key", "tampered"])
def test_the_command_refuses_to_start_in_one_line_with_status_2(tmp_path, serve_keys, capsys, how):
    from modelkeep.cli.main import main

    path = save_task_model("binary", tmp_path / "binary.safetensors")
    if how != "unsigned":
        _signed(path, serve_keys / ("private.pem" if how == "tampered" else "other_private.pem"))
    if how == "tampered":
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
    status = main(["serve", str(path), "--require-signature", str(serve_keys / "public.pem"), "--port", "1"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    expected = {"unsigned": "binary.safetensors.sig", "other key": "another key", "tampered": "tampered"}[how]
    assert err.startswith("modelkeep: error:") and expected in err, err


@pytest.fixture()
def signed_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELKEEP_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("MODELKEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_an_alias_moved_to_an_unsigned_version_is_refused_and_the_old_one_keeps_serving(signed_registry,
                                                                                         serve_keys, caplog):
    from modelkeep import registry as api

    private, public = serve_keys / "private.pem", str(serve_keys / "public.pem")
    first = api.push(_signed(save_task_model("binary", signed_registry / "b0.safetensors", seed=0), private),
                     "churn", alias="production")
    unsigned = api.push(save_task_model("binary", signed_registry / "b1.safetensors", seed=1), "churn")
    third = api.push(_signed(save_task_model("binary", signed_registry / "b2.safetensors", seed=2), private),
                     "churn")
    app = create_app(ServeSettings(sources=("registry://churn@production",), require_signature=public,
                                   backend="torch"))
    table, request = app.state.table, v2_request("binary", rows_for("binary", 2))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as http:
            api.set_alias("churn", unsigned.id, "production")
            with caplog.at_level(logging.WARNING, logger="modelkeep.serve"):
                refused = [await table.refresh("registry://churn@production") for _ in range(2)]
            still = await http.post("/v2/models/churn/infer", json=request)
            api.set_alias("churn", third.id, "production")
            moved = await table.refresh("registry://churn@production")
            return refused, still, moved, (await http.get("/v2/models/churn")).json()

    refused, still, moved, metadata = asyncio.run(scenario())
    assert refused == [False, False]
    assert still.status_code == 200 and still.json()["model_version"] == first.id[:12]
    warnings = [r.getMessage() for r in caplog.records if "refused version" in r.getMessage()]
    assert len(warnings) == 1 and unsigned.id[:12] in warnings[0] and first.id[:12] in warnings[0], warnings
    assert "not signed" in warnings[0] or ".sig" in warnings[0]
    assert moved is True and metadata["versions"] == [third.id[:12]]


def test_a_registry_source_without_a_signature_is_refused_at_start_up(signed_registry, serve_keys):
    from modelkeep import registry as api

    api.push(save_task_model("binary", signed_registry / "b0.safetensors"), "churn", alias="production")
    with pytest.raises(SignatureError):
        create_app(ServeSettings(sources=("registry://churn@production",),
                                 require_signature=str(serve_keys / "public.pem"), backend="torch"))

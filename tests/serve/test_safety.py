"""Bad, oversized and hostile requests: each a clear 4xx with ``{"error": ...}``, never a 5xx; API keys; CORS."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serve_models import rows_for, v2_request
from modelkeep.serve import ServeSettings, create_app

GOOD = v2_request("multiclass", rows_for("multiclass", 2))


def _with(**changes) -> dict:
    request = json.loads(json.dumps(GOOD))
    request["inputs"][0].update(changes)
    return request


BAD_V2 = {
    "wrong shape": (_with(shape=[2, 5]), "shape"),
    "negative shape": (_with(shape=[-2, 4]), "shape"),
    "no rows": (_with(shape=[0, 4], data=[]), "no rows"),
    "data shorter than shape": (_with(shape=[3, 4]), "holds 8"),
    "wrong datatype": (_with(datatype="INT64"), "FP32"),
    "unknown datatype": (_with(datatype="COMPLEX"), "FP32"),
    "wrong input name": (_with(name="pixels"), "input_1"),
    "text in data": (_with(data=["a"] * 8), "text"),
    "ragged nested data": (_with(data=[[1, 2, 3, 4], [1, 2, 3]]), "equal lengths"),
    "objects in data": (_with(data=[{"x": 1}] * 8), "model takes"),
    "huge integers": (_with(data=[10**400] * 8), "model takes"),
    "unknown output": ({**GOOD, "outputs": [{"name": "logits"}]}, "no output"),
    "two inputs": ({"inputs": GOOD["inputs"] * 2}, "one input"),
    "no inputs": ({"inputs": []}, "inputs"),
    "unknown field": ({**GOOD, "extra": 1}, "extra"),
    "inputs not a list": ({"inputs": {"name": "x"}}, "inputs"),
}


@pytest.mark.parametrize("case", list(BAD_V2))
def test_bad_v2_inputs_are_refused_with_400(client, case):
    request, words = BAD_V2[case]
    response = client.post("/v2/models/multiclass/infer", json=request)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and words in response.json()["error"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_refused_by_default(client, literal):
    body = json.dumps(GOOD).replace("[" + str(GOOD["inputs"][0]["data"][0]), f"[{literal}", 1)
    response = client.post("/v2/models/multiclass/infer", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "NaN or infinite" in response.json()["error"]
    response = client.post("/v1/models/multiclass/predict", content='{"instances": [[1, 2, 3, %s]]}' % literal)
    assert response.status_code == 400 and "NaN or infinite" in response.json()["error"]


def test_token_ids_outside_the_embedding_and_fractional_ids(client):
    rows = rows_for("tokens", 1)
    rows[0, 3] = 20
    response = client.post("/v2/models/tokens/infer", json=v2_request("tokens", rows))
    assert response.status_code == 400 and "token ids from 0 to 19" in response.json()["error"]
    response = client.post("/v1/models/tokens/predict", json={"instances": [[-1, 0, 0, 0, 0, 0, 0, 0]]})
    assert response.status_code == 400 and "token ids" in response.json()["error"]
    response = client.post("/v1/models/tokens/predict", json={"instances": [[0.5, 0, 0, 0, 0, 0, 0, 0]]})
    assert response.status_code == 400 and "integers" in response.json()["error"]


@pytest.mark.parametrize("body, words", [
    (b'{"inputs": [', "not valid JSON"), (b"\xff\xfe garbage", "not valid JSON"), (b"", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"), (b'{"id": 1, "inputs": []}', "id"),
])
def test_malformed_bodies_are_400(client, body, words):
    response = client.post("/v2/models/multiclass/infer", content=body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


@pytest.mark.parametrize("path, status", [
    ("/v2/models/nope/infer", 404), ("/v2/models/multiclas/infer", 404), ("/v1/models/nope/predict", 404),
    ("/v2/models/multiclass/versions/0000/infer", 404), ("/v2/nowhere", 404),
])
def test_unknown_models_versions_and_routes_are_404(client, path, status):
    response = client.post(path, json=GOOD)
    assert response.status_code == status and set(response.json()) == {"error"}
    if "multiclas/" in path:
        assert "did you mean 'multiclass'" in response.json()["error"]
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/multiclass/infer").status_code == 405


def test_bad_v1_requests(client):
    cases = [({"instances": []}, "instances"), ({"rows": [[1, 2, 3, 4]]}, "instances"),
             ({"instances": [[1, 2, 3]]}, "shape"), ({"instances": [["a", "b", "c", "d"]]}, "text"),
             ({"instances": ["some text"]}, "text")]
    for request, words in cases:
        response = client.post("/v1/models/binary/predict", json=request)
        assert response.status_code == 400 and words in response.json()["error"], (request, response.text)
    assert client.post("/v1/models/binary/predict?top=0", json={"instances": [[1, 2, 3, 4]]}).status_code == 400
    for content in (b"", b"\x00\x01\x02binary", b"a,b,c,d\n1,2,3\n", b"\x89PNG\r\n\x1a\nbroken"):
        response = client.post("/v1/models/binary/predict", files={"file": ("x", content, "application/octet-stream")})
        assert 400 <= response.status_code < 500 and set(response.json()) == {"error"}, response.text
    response = client.post("/v1/models/binary/predict", files={"other": ("x", b"1,2,3,4", "text/csv")})
    assert response.status_code == 400 and "'file'" in response.json()["error"]


def _app(model_files, **settings) -> TestClient:
    return TestClient(create_app(ServeSettings(sources=(str(model_files["binary"]),), **settings)))


def test_body_and_row_limits(model_files):
    with _app(model_files, max_body_bytes=2_000, max_request_rows=4) as small:
        big = v2_request("binary", rows_for("binary", 200))
        response = small.post("/v2/models/binary/infer", json=big)  # declared length over the limit
        assert response.status_code == 413 and "2,000 bytes" in response.json()["error"]

        def chunks():  # no Content-Length: cut off while reading
            for _ in range(100):
                yield b" " * 100

        response = small.post("/v2/models/binary/infer", content=chunks())
        assert response.status_code == 413 and set(response.json()) == {"error"}
        response = small.post("/v2/models/binary/infer", json=v2_request("binary", rows_for("binary", 5)))
        assert response.status_code == 413 and "at most 4" in response.json()["error"]
        response = small.post("/v1/models/binary/predict", json={"instances": rows_for("binary", 5).tolist()})
        assert response.status_code == 413 and "at most 4" in response.json()["error"]
        csv = "\n".join("1,2,3,4" for _ in range(5)).encode()
        response = small.post("/v1/models/binary/predict", files={"file": ("rows.csv", csv, "text/csv")})
        assert response.status_code == 413 and "at most 4" in response.json()["error"]
        assert small.post("/v2/models/binary/infer", json=v2_request("binary", rows_for("binary", 4))).status_code == 200


def test_api_keys_guard_inference_only(model_files):
    request = v2_request("binary", rows_for("binary", 1))
    with _app(model_files, api_keys=("k-one", "k-two")) as guarded:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "k-on"}, {"Authorization": "k-one"}):
            response = guarded.post("/v2/models/binary/infer", json=request, headers=headers)
            assert response.status_code == 401 and set(response.json()) == {"error"}, headers
            assert "k-one" not in response.text
            assert guarded.post("/v1/models/binary/predict", json={"instances": [[1, 2, 3, 4]]},
                                headers=headers).status_code == 401
        assert guarded.post("/v2/models/binary/infer", json=request,
                            headers={"Authorization": "Bearer k-two"}).status_code == 200
        assert guarded.post("/v2/models/binary/infer", json=request, headers={"X-API-Key": "k-one"}).status_code == 200
        for path in ("/v2/health/ready", "/v2", "/v2/models/binary", "/metrics"):
            assert guarded.get(path).status_code == 200


def test_cors_is_off_by_default_and_on_when_asked(model_files):
    headers = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    with _app(model_files) as plain:
        response = plain.options("/v2/models/binary/infer", headers=headers)
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in plain.get("/v2", headers=headers).headers
    with _app(model_files, cors_origins=("https://example.org",)) as open_to_one:
        response = open_to_one.options("/v2/models/binary/infer", headers=headers)
        assert response.headers["access-control-allow-origin"] == "https://example.org"


def test_allow_nonfinite_answers_null_not_500(model_files):
    with _app(model_files, allow_nonfinite=True) as lenient:
        request = v2_request("binary", rows_for("binary", 1))
        request["inputs"][0]["data"][0] = float("nan")
        body = json.dumps(request)
        response = lenient.post("/v2/models/binary/infer", content=body)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [None]
        response = lenient.post("/v1/models/binary/predict", content='{"instances": [[NaN, 1, 2, 3]]}')
        assert response.status_code == 200 and response.json()["predictions"][0]["probability"] is None


def test_access_log_is_one_json_line_per_request(model_files, caplog):
    import logging

    with _app(model_files, api_keys=("secret-key",)) as logged, caplog.at_level(logging.INFO, "modelkeep.serve.access"):
        logged.post("/v2/models/binary/infer", json=v2_request("binary", rows_for("binary", 1)),
                    headers={"X-API-Key": "secret-key"})
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "modelkeep.serve.access"]
    assert records and records[-1]["status"] == 200 and records[-1]["model"] == "binary"
    assert records[-1]["endpoint"] == "/v2/models/{name}/infer" and "secret-key" not in caplog.text


def test_a_bug_is_a_500_with_an_error_body(model_files, monkeypatch):
    from modelkeep.serve import table

    def broken(served, rows):
        raise ZeroDivisionError("internal detail")

    monkeypatch.setitem(table.KINDS, "infer", broken)
    with TestClient(create_app(ServeSettings(sources=(str(model_files["binary"]),))),
                    raise_server_exceptions=False) as buggy:
        response = buggy.post("/v2/models/binary/infer", json=v2_request("binary", rows_for("binary", 1)))
    assert response.status_code == 500 and set(response.json()) == {"error"}
    assert "ZeroDivisionError" in response.json()["error"] and "internal detail" not in response.json()["error"]


def _json_values():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=5)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                        | st.dictionaries(st.sampled_from(["name", "shape", "datatype", "data", "inputs", "outputs",
                                                           "parameters", "id", "instances", "binary_data_size"]),
                                          inner, max_size=5), max_leaves=30)


def test_random_bodies_never_get_a_5xx(client):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    tensor = st.fixed_dictionaries({"name": st.sampled_from(["input_1", "tokens", "x"]),
                                    "shape": st.lists(st.integers(-2, 9), max_size=4),
                                    "datatype": st.sampled_from(["FP32", "INT64", "BOOL", "BYTES", "FP16"]),
                                    "data": _json_values()})
    bodies = st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=2)}) | _json_values()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, model=st.sampled_from(["multiclass", "tokens", "digits"]), v1=st.booleans())
    def check(body, model, v1):
        path = f"/v1/models/{model}/predict" if v1 else f"/v2/models/{model}/infer"
        response = client.post(path, content=json.dumps(body).encode())
        assert response.status_code < 500, (path, body, response.text)
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}

    check()

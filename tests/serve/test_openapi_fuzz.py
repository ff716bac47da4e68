"""A schema-driven fuzz of the server's OpenAPI document with schemathesis: every operation it describes, against
a served classifier, answers no 5xx and conforms to the document (status codes, content types, response bodies).

Generated path parameters name the served model (and its version) in about half of the cases, so generated
bodies reach the checks behind the 404 rather than stopping there. The second fuzz runs with API keys
configured: inference cases go with a valid key, a wrong one or none, and must then be 401 exactly when the
key is not valid. A third runs the management endpoints (enabled, with their own key) the same way: 401
without a valid key, 403 with an inference key, never a 5xx. Bounded: ``MAX_EXAMPLES`` per operation, eleven operations, eager PyTorch (the backend does
not change which requests are refused, and the onnxruntime export would only slow the set-up).
"""
from __future__ import annotations

import json

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from schemathesis.checks import (content_type_conformance, not_a_server_error,  # noqa: E402
                                 response_schema_conformance, status_code_conformance)

MODEL = "multiclass"
KEY = "fuzz-key-0123"
ADMIN_KEY = "fuzz-admin-4567"
MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck))


def _schema(model_files, **options):
    from modelkeep.serve import ServeSettings, create_app

    app = create_app(ServeSettings(sources=(str(model_files[MODEL]),), max_queue_delay_us=0, backend="torch",
                                   **options))
    version = app.state.table.get(MODEL).version
    schema = schemathesis.openapi.from_asgi("/openapi.json", _without_lifespan(app))

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):  # noqa: ARG001 - the hook's signature
        if not path_parameters:
            return st.just(path_parameters)
        served = {**path_parameters}
        if "name" in served:
            served["name"] = MODEL
        if "version" in served:
            served["version"] = version
        return st.sampled_from([served, path_parameters])

    if options.get("api_keys"):
        key = ADMIN_KEY if options.get("management") else KEY

        @schema.hook
        def flatmap_headers(context, headers):  # noqa: ARG001
            headers = dict(headers or {})
            return st.sampled_from([{**headers, "X-API-Key": key}, {**headers, "Authorization": f"Bearer {key}"},
                                    headers, {**headers, "X-API-Key": "wrong-key"},
                                    {**headers, "Authorization": "Bearer"}, {**headers, "X-API-Key": KEY}])
    return app, schema


def _without_lifespan(app):
    """``app`` for schemathesis, whose ASGI client runs the lifespan around every call: the app's shutdown
    closes its batchers for good, so the fixture runs start-up and shutdown once and this answers the rest."""
    async def wrapped(scope, receive, send):
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        while True:
            message = await receive()
            kind = message["type"].rpartition(".")[2]  # startup or shutdown
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    return wrapped


@pytest.fixture(scope="module")
def open_schema(model_files):
    from starlette.testclient import TestClient

    app, schema = _schema(model_files)
    with TestClient(app):
        yield schema


@pytest.fixture(scope="module")
def keyed_schema(model_files):
    from starlette.testclient import TestClient

    app, schema = _schema(model_files, api_keys=(KEY,))
    with TestClient(app):
        yield schema


@pytest.fixture(scope="module")
def management_schema(model_files):
    from starlette.testclient import TestClient

    app, schema = _schema(model_files, api_keys=(KEY,), management=True, management_keys=(ADMIN_KEY,))
    with TestClient(app):
        yield schema


# every operation of the document (the last test checks that this is all of them): (method, path)
OPERATIONS = [("GET", "/v2/health/live"), ("GET", "/v2/health/ready"), ("GET", "/v2"),
              ("GET", "/v2/models/{name}"), ("GET", "/v2/models/{name}/versions/{version}"),
              ("GET", "/v2/models/{name}/ready"), ("GET", "/v2/models/{name}/versions/{version}/ready"),
              ("POST", "/v2/models/{name}/infer"), ("POST", "/v2/models/{name}/versions/{version}/infer"),
              ("GET", "/v1/models/{name}"), ("POST", "/v1/models/{name}/predict")]


MANAGEMENT = [("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/{name}/load"),
              ("POST", "/v2/repository/models/{name}/unload")]


def _cases(schema, method: str, path: str):
    """Valid and invalid requests for one operation (schemathesis's positive and negative generation).

    (``schemathesis.pytest.from_fixture`` would do this, but its lazy loader writes pytest's private
    ``Function._nodeid``, which pytest 9 no longer has; so each operation is a parametrized test here.)"""
    from schemathesis import GenerationMode

    operation = schema[path][method]
    # one strategy per body media type: left to choose, schemathesis drew only the binary-tensor body of infer
    media_types = [body.media_type for body in operation.body] or [None]
    modes = [GenerationMode.POSITIVE]
    if operation.path_parameters or operation.query or operation.body:
        modes.append(GenerationMode.NEGATIVE)
    return st.one_of([operation.as_strategy(mode, hooks=schema.hooks, media_type=media_type)
                      for mode in modes for media_type in media_types])


def _fuzz(schema, method: str, path: str, check) -> None:
    @FUZZ_SETTINGS
    @given(case=_cases(schema, method, path))
    def run(case):
        check(case)

    run()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_without_a_server_error(open_schema, method, path):
    _fuzz(open_schema, method, path, lambda case: case.call_and_validate(checks=CHECKS))


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_with_api_keys_inference_is_refused_exactly_without_a_valid_key(keyed_schema, method, path):
    _fuzz(keyed_schema, method, path, _keyed_check)


def _keyed_check(case) -> None:
    response = case.call_and_validate(checks=CHECKS)
    if case.method != "POST":  # health, metadata and readiness stay open
        assert response.status_code != 401
        return
    valid = _sent_key(case.headers or {}) == KEY
    if not valid:  # 401, unless the framework refused a malformed query parameter first (before the handler)
        if response.status_code == 400 and response.json()["error"].startswith("query."):
            return
        assert response.status_code == 401, (response.status_code, response.text[:200])
        assert response.headers.get("www-authenticate") in (["Bearer"], "Bearer")
    else:
        assert response.status_code != 401, response.text[:200]


@pytest.mark.parametrize(("method", "path"), MANAGEMENT, ids=[f"{m} {p}" for m, p in MANAGEMENT])
def test_management_needs_its_own_key_and_never_fails(management_schema, method, path):
    def check(case) -> None:
        response = case.call_and_validate(checks=CHECKS)
        sent = _sent_key(case.headers or {})
        if sent != ADMIN_KEY:
            assert response.status_code == (403 if sent == KEY else 401), (sent, response.text[:200])
        else:
            assert response.status_code not in (401, 403), response.text[:200]

    _fuzz(management_schema, method, path, check)


def _sent_key(headers) -> str | None:
    """The key a request presents, as docs/serving.md says: a well-formed ``Authorization: Bearer KEY`` wins
    over ``X-API-Key`` (the document's security schemes let schemathesis send either, or both)."""
    headers = {name.lower(): value for name, value in headers.items()}
    scheme, _, token = str(headers.get("authorization", "")).partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def test_the_document_describes_every_body_the_server_reads(open_schema):
    """The operations that take a body declare its schema (the fuzz generates from them)."""
    document = open_schema.raw_schema
    posts = {path: operations["post"] for path, operations in document["paths"].items() if "post" in operations}
    assert set(posts) == {"/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer",
                          "/v1/models/{name}/predict"}
    for path, operation in posts.items():
        content = operation["requestBody"]["content"]
        assert content["application/json"]["schema"], path
    assert set(posts["/v1/models/{name}/predict"]["requestBody"]["content"]) == {"application/json",
                                                                                 "multipart/form-data"}
    listed = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    assert listed == set(OPERATIONS)  # a new endpoint joins the fuzz by joining OPERATIONS
    infer = posts["/v2/models/{name}/infer"]  # the binary tensor extension: JSON, then raw bytes
    assert infer["requestBody"]["content"]["application/octet-stream"]["schema"]["format"] == "binary"
    assert "Inference-Header-Content-Length" in {p["name"] for p in infer["parameters"]}
    assert "application/octet-stream" in infer["responses"]["200"]["content"]
    assert "security" not in infer  # no keys: inference is open, and the document says so
    # and schemathesis sees every body (a dangling $ref once made it drop infer's JSON body without a word)
    seen = {path: [body.media_type for body in open_schema[path]["POST"].body] for path in posts}
    assert seen["/v2/models/{name}/infer"] == ["application/json", "application/octet-stream"], seen
    assert seen["/v1/models/{name}/predict"] == ["application/json", "multipart/form-data"], seen


def test_the_document_declares_the_keys_and_where_they_are_needed(keyed_schema, management_schema):
    for schema in (keyed_schema, management_schema):
        document = schema.raw_schema
        schemes = document["components"]["securitySchemes"]
        assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"}
        assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                secured = method == "post"  # infer, predict (keys configured here) and management
                assert ("security" in operation) == secured, (method, path)
                if secured:
                    assert operation["security"] == [{"bearer": []}, {"apiKey": []}]
                    assert "401" in operation["responses"], (method, path)
    listed = {(m.upper(), p) for p, ops in management_schema.raw_schema["paths"].items() for m in ops}
    assert listed == set(OPERATIONS) | set(MANAGEMENT)


@FUZZ_SETTINGS
@given(rows=st.integers(1, 6).flatmap(lambda n: st.lists(st.floats(width=32), min_size=4 * n, max_size=4 * n)))
def test_bodies_of_the_right_shape_with_any_numbers_are_answered_or_refused_with_400(open_schema, rows):
    """What the document cannot generate: bodies that fit the signature, with any float32 (NaN, infinities,
    3e38) -- they reach the preprocessing and the network, where an overflow must still be a 400."""
    from starlette.testclient import TestClient

    client = TestClient(open_schema.app)  # the lifespan-less wrapper: the fixture runs the app's own
    shape = [len(rows) // 4, 4]
    body = {"inputs": [{"name": "input_1", "shape": shape, "datatype": "FP32", "data": rows}]}
    instances = {"instances": [rows[i:i + 4] for i in range(0, len(rows), 4)]}
    headers = {"Content-Type": "application/json"}  # json.dumps writes NaN and Infinity as JavaScript does
    infer = client.post(f"/v2/models/{MODEL}/infer", content=json.dumps(body), headers=headers)
    predict = client.post(f"/v1/models/{MODEL}/predict", content=json.dumps(instances), headers=headers)
    for response in (infer, predict):
        assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    if infer.status_code == 200:
        assert all(v is not None for output in infer.json()["outputs"] for v in output["data"])

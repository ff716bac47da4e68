"""The OCI backend against a real `distribution` registry on loopback (skipped when docker-registry is missing)."""
from __future__ import annotations

import base64
import http.client
import http.server
import json
import multiprocessing
import re
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from servers import free_port, oci_registry, oci_registry_auth  # noqa: F401  (fixtures)

from modelkeep import registry
from modelkeep.errors import ConfigError, FormatError, IntegrityError, ModelNotFoundError, StorageError
from modelkeep.registry import EmbeddedRegistry, layout
from modelkeep.registry.oci import OciRegistry, parse_oci_url
from modelkeep.registry.oci_store import OciRepository

from registry_files import backbone, fine_tune, head, write_model

pytest.importorskip("oras", reason="the OCI backend needs oras (pip install modelkeep[oci])")


def _location(server) -> str:
    return f"oci://{server.host}/t{uuid.uuid4().hex[:10]}"  # a fresh namespace per test: the server is shared


@pytest.fixture()
def reg(oci_registry):  # noqa: F811
    return OciRegistry(_location(oci_registry))


@pytest.fixture(autouse=True)
def _no_docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("MODELKEEP_OCI_USERNAME", "MODELKEEP_OCI_PASSWORD", "MODELKEEP_OCI_INSECURE"):
        monkeypatch.delenv(var, raising=False)


def test_round_trip_is_byte_identical_and_a_version_is_an_oci_image_manifest(reg, tmp_path):
    original = fine_tune(tmp_path / "m.safetensors", 1, metrics={"accuracy": 0.91}, hyperparameters={"lr": 0.1})
    version = reg.push(original, "digits", alias="production", card="# Digits\n")
    assert version.aliases == ("production",) and version.size == original.stat().st_size
    assert version.metrics == {"accuracy": 0.91} and version.hyperparameters == {"lr": 0.1}
    for ref in ("digits", f"digits:{version.id}", f"digits:{version.id[:6]}", "digits@production"):
        assert reg.pull(ref, tmp_path / "out.safetensors").read_bytes() == original.read_bytes()
    assert reg.card("digits@production") == "# Digits\n"
    repository = reg.repository("digits")
    assert f"mk-{version.id}" in repository.tags()
    digest, body = repository.manifest(f"mk-{version.id}", limit=1 << 20)
    doc = json.loads(body)
    assert doc["artifactType"] == "application/vnd.modelkeep.model.v1"
    assert doc["config"] == {"mediaType": "application/vnd.modelkeep.version.v1+json",
                             "digest": f"sha256:{version.id}", "size": len(layout.encode(reg.manifest("digits", version.id)))}
    types = [layer["mediaType"] for layer in doc["layers"]]
    assert types[0] == "application/vnd.modelkeep.header.v1" and types[-1] == "text/markdown"
    tensors = {layer["annotations"]["dev.modelkeep.tensor"] for layer in doc["layers"] if "annotations" in layer}
    assert tensors == set(backbone(0)) | set(head(1))
    assert "org.opencontainers.image.created" in doc["annotations"]
    assert json.loads(doc["annotations"]["dev.modelkeep.record"])["metrics"] == {"accuracy": 0.91}
    assert reg.resolve(f"digits@{digest}") == ("digits", version.id)
    location, ref = parse_oci_url(f"{reg.location}/digits:production")
    assert location == reg.location and reg.show(ref).id == version.id


def test_the_module_api_takes_an_oci_url(oci_registry, tmp_path):  # noqa: F811
    location = _location(oci_registry)
    original = fine_tune(tmp_path / "m.safetensors", 2, metrics={"accuracy": 0.7})
    version = registry.push(original, "m", alias="staging", registry=location)
    assert registry.show("m@staging", registry=location).id == version.id
    assert registry.pull("m", tmp_path / "o.safetensors", registry=location).read_bytes() == original.read_bytes()
    assert [v.id for v in registry.list("accuracy<0.8", registry=location)] == [version.id]
    assert registry.gc(registry=location) == []  # the registry collects its own blobs


def test_aliases_move_latest_list_and_remove(reg, tmp_path):
    first = reg.push(fine_tune(tmp_path / "a.safetensors", 1, metrics={"accuracy": 0.8}), "m", alias="production")
    second = reg.push(fine_tune(tmp_path / "b.safetensors", 2, metrics={"accuracy": 0.95}), "m", alias="best",
                      parent=f"m:{first.id}")
    other = reg.push(fine_tune(tmp_path / "c.safetensors", 3, metrics={"accuracy": 0.5}), "other")
    assert reg.show("m").id == second.id and reg.show("m").parent == first.id
    reg.set_alias("m", second.id[:10], "production")
    assert reg.show("m@production").id == second.id and reg.show(f"m:{first.id}").aliases == ()
    assert reg.show("m").aliases == ("best", "production")
    assert [v.id for v in reg.list()] == [first.id, second.id, other.id]
    assert [v.id for v in reg.list("accuracy>0.9")] == [second.id]
    assert [v.id for v in reg.list("other")] == [other.id]
    assert reg.remove("m@best") == []
    with pytest.raises(ModelNotFoundError, match="m@best"):
        reg.show("m@best")
    assert reg.show("m").aliases == ("production",)
    assert reg.remove(f"m:{second.id[:8]}") == [second.id]  # its manifest, with the production tag
    assert [v.id for v in reg.list()] == [first.id, other.id]
    with pytest.raises(ModelNotFoundError):
        reg.show("m@production")
    assert reg.remove("other") == [other.id] and [v.id for v in reg.list()] == [first.id]


def test_names_aliases_and_refs_that_oci_cannot_hold_are_refused(reg, tmp_path):
    path = fine_tune(tmp_path / "m.safetensors", 1)
    with pytest.raises(ConfigError, match="'resnet'"):
        reg.push(path, "ResNet")
    with pytest.raises(ConfigError, match="mk-"):
        reg.push(path, "m", alias="mk-mine")
    for ref in ("bad name", "m:xyz", "m@", "Upper"):
        with pytest.raises(ConfigError):
            reg.show(ref)
    with pytest.raises(ModelNotFoundError, match="ls"):
        reg.show("missing")


def test_ten_frozen_backbone_fine_tunes_are_deduplicated_by_the_registry(reg, oci_registry, tmp_path):  # noqa: F811
    blobs = oci_registry.root / "docker" / "registry" / "v2" / "blobs"

    def stored() -> int:
        return sum(p.stat().st_size for p in blobs.rglob("data")) if blobs.exists() else 0

    files = [fine_tune(tmp_path / f"ft{i}.safetensors", 500 + i, width=256) for i in range(10)]
    before = stored()
    reg.push(files[0], "ft")
    after_one = stored()
    for i, path in enumerate(files[1:], 1):
        reg.push(path, "ft", alias=f"v{i}")
    grown = stored() - before
    one = files[0].stat().st_size
    heads = sum(t.numel() * t.element_size() for t in head(0, 256).values())
    as_files = sum(p.stat().st_size for p in files)
    print(f"\n10 fine-tunes: {as_files:,} bytes as files, the registry grew by {grown:,} "
          f"({grown / as_files:.2f}x); one model {one:,}, one head {heads:,}")
    assert grown <= 1.2 * one + 10 * heads
    assert stored() - after_one <= 9 * (heads + (16 << 10))  # each later version: its head, header and manifests


def test_credentials_from_arguments_environment_and_docker_config(oci_registry_auth, tmp_path, monkeypatch):  # noqa: F811
    server = oci_registry_auth
    location = _location(server)
    original = fine_tune(tmp_path / "m.safetensors", 1)
    right = OciRegistry(location, username=server.username, password=server.password)
    version = right.push(original, "m")
    with pytest.raises(ConfigError, match="MODELKEEP_OCI_USERNAME"):
        OciRegistry(location).show("m")
    with pytest.raises(ConfigError, match="refused"):
        OciRegistry(location, username=server.username, password="wrong").pull("m", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    monkeypatch.setenv("MODELKEEP_OCI_USERNAME", server.username)
    monkeypatch.setenv("MODELKEEP_OCI_PASSWORD", server.password)
    assert OciRegistry(location).pull("m", tmp_path / "o.safetensors").read_bytes() == original.read_bytes()
    monkeypatch.delenv("MODELKEEP_OCI_USERNAME")
    monkeypatch.delenv("MODELKEEP_OCI_PASSWORD")
    config = Path.home() / ".docker" / "config.json"
    config.parent.mkdir(parents=True)
    secret = base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
    config.write_text(json.dumps({"auths": {server.host: {"auth": secret}}}))
    assert OciRegistry(location).show("m").id == version.id


def test_an_interrupted_push_is_invisible_and_the_retry_sends_only_what_is_missing(reg, tmp_path, monkeypatch):
    original = fine_tune(tmp_path / "m.safetensors", 7)
    uploads = []
    real_upload = OciRepository._upload

    def counting(self, body, digest, size):
        uploads.append(digest)
        return real_upload(self, body, digest, size)

    monkeypatch.setattr(OciRepository, "_upload", counting)

    def die_after_three_blobs(nbytes, seen=[]):
        seen.append(nbytes)
        if len(seen) == 3:
            raise KeyboardInterrupt("killed mid-push")

    with pytest.raises(KeyboardInterrupt):
        reg.push(original, "m", progress=die_after_three_blobs)
    arrived = set(uploads)  # three, or more: blobs go eight at a time, and those under way finish
    assert len(arrived) >= 3
    assert reg.list() == [] and not [t for t in reg.repository("m").tags() if t.startswith("mk-")]
    with pytest.raises(ModelNotFoundError):
        reg.show("m")
    first = len(uploads)
    version = reg.push(original, "m")
    blobs = layout.blobs_of(reg.manifest("m", version.id))
    resent = uploads[first:]
    assert not set(resent) & arrived  # nothing twice
    assert len(resent) == len(blobs - arrived) + 1  # the missing blobs and the config
    assert reg.pull("m", tmp_path / "o.safetensors").read_bytes() == original.read_bytes()


def test_a_blob_corrupted_in_the_registry_storage_is_refused_on_pull(reg, oci_registry, tmp_path):  # noqa: F811
    tensors = {"w": __import__("torch").arange(4096, dtype=__import__("torch").float32) * 0.5 + 123.0}
    version = reg.push(write_model(tmp_path / "m.safetensors", tensors), "m")
    digest = reg.manifest("m", version.id)["segments"][-1]["digest"]
    data = oci_registry.root / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    data.write_bytes(b"\xff" + data.read_bytes()[1:])
    out = tmp_path / "out.safetensors"
    with pytest.raises(IntegrityError, match=digest):
        reg.pull("m", out)
    assert not out.exists()
    with pytest.raises(FormatError, match="larger than"):
        reg.blob_store("m").get(reg.manifest("m", version.id)["header"]["digest"], max_bytes=16)


def test_a_blob_collected_by_the_registry_during_a_push_is_put_again(reg, oci_registry, tmp_path, monkeypatch):  # noqa: F811
    original = fine_tune(tmp_path / "m.safetensors", 31)
    real_publish = reg.publish
    unlinked = []

    def publish_after_the_registry_collected_a_blob(name, manifest, record, **options):
        if not unlinked:  # as `registry garbage-collect` would: the repository no longer links the blob
            digest = manifest["segments"][-1]["digest"]
            link = (oci_registry.root / "docker/registry/v2/repositories" / reg.repository(name).path
                    / "_layers/sha256" / digest / "link")
            link.unlink()
            unlinked.append(digest)
        return real_publish(name, manifest, record, **options)

    monkeypatch.setattr(reg, "publish", publish_after_the_registry_collected_a_blob)
    uploads = []
    real_upload = OciRepository._upload
    monkeypatch.setattr(OciRepository, "_upload", lambda self, *a: uploads.append(a[1]) or real_upload(self, *a))
    version = reg.push(original, "m")
    assert unlinked and uploads.count(unlinked[0]) == 2  # refused at the manifest PUT, put again, published
    assert reg.pull(f"m:{version.id}", tmp_path / "o.safetensors").read_bytes() == original.read_bytes()


def _push_and_promote(location, paths):
    reg = OciRegistry(location)
    ids = []
    for path in paths:
        ids.append(reg.push(path, "shared").id)
        reg.set_alias("shared", ids[-1], "production")
    return ids


def test_two_processes_pushing_and_moving_one_alias_lose_nothing(oci_registry, tmp_path):  # noqa: F811
    location = _location(oci_registry)
    jobs = [[fine_tune(tmp_path / f"p{p}-{i}.safetensors", 100 * p + i) for i in range(4)] for p in range(2)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.starmap(_push_and_promote, [(location, paths) for paths in jobs])
    reg = OciRegistry(location)
    assert sorted(v.id for v in reg.list()) == sorted(results[0] + results[1])
    assert reg.show("shared@production").id in (results[0][-1], results[1][-1])
    for ids, paths in zip(results, jobs):
        for version_id, path in zip(ids, paths):
            assert reg.pull(f"shared:{version_id}", tmp_path / "o.safetensors").read_bytes() == path.read_bytes()


def test_a_signature_travels_as_an_attachment(reg, tmp_path):
    original = fine_tune(tmp_path / "m.safetensors", 1)
    version = reg.push(original, "m", signature=b"bundle bytes")
    assert f"mk-{version.id}.sig" in reg.repository("m").tags()
    pulled = reg.pull("m", tmp_path / "out.safetensors")
    assert Path(str(pulled) + ".sig").read_bytes() == b"bundle bytes"
    assert [v.id for v in reg.list()] == [version.id]  # the attachment is no version
    reg.remove("m")
    assert reg.repository("m").tags() == []


def test_copy_from_an_embedded_registry_sends_each_blob_once(reg, tmp_path):
    source = EmbeddedRegistry(tmp_path / "embedded", durable=False)
    for i in range(3):
        source.push(fine_tune(tmp_path / f"{i}.safetensors", i), "m", alias=f"v{i}")
    report = registry.copy(source, reg, "m")
    assert [v.id for v in report.versions] == [v.id for v in source.list()]
    assert report.blobs_skipped == 8 * 2  # the backbone's eight tensors, sent with the first version only
    assert reg.show("m@v1").id == source.show("m@v1").id


def test_unreachable_registries_and_plain_http_rules(oci_registry, monkeypatch):  # noqa: F811
    port = free_port()
    with pytest.raises(StorageError, match=f"127.0.0.1:{port}.*connection refused"):
        OciRegistry(f"oci://127.0.0.1:{port}/team").list()
    with pytest.raises(StorageError, match="MODELKEEP_OCI_INSECURE"):
        OciRegistry(f"oci://{oci_registry.host}/team", insecure=False).list()  # HTTPS to a plain-HTTP registry
    assert OciRegistry("oci://localhost:5000").insecure and OciRegistry("oci://[::1]:5000/a/b").insecure
    assert not OciRegistry("oci://registry.example.com/team").insecure
    monkeypatch.setenv("MODELKEEP_OCI_INSECURE", "1")
    assert OciRegistry("oci://registry.example.com/team").insecure
    for bad in ("oci://", "oci://host/Team", "oci://user:pw@host/team", "s3://bucket"):
        with pytest.raises(ConfigError):
            OciRegistry(bad)
    with pytest.raises(ConfigError, match="both"):
        OciRegistry("oci://localhost:5000", username="only")


def test_a_missing_oras_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "oras", None)
    with pytest.raises(ConfigError, match=r"pip install modelkeep\[oci\]"):
        OciRegistry("oci://localhost:5000/team")


VID = "ab" * 32


@pytest.mark.parametrize("url, expected", [
    ("oci://ghcr.io/acme/models/resnet:production", ("oci://ghcr.io/acme/models", "resnet@production")),
    ("oci://localhost:5000/resnet", ("oci://localhost:5000", "resnet")),
    (f"oci://localhost:5000/team/resnet:mk-{VID}", ("oci://localhost:5000/team", f"resnet:{VID}")),
    (f"oci://h:1/team/resnet@sha256:{VID}", ("oci://h:1/team", f"resnet@sha256:{VID}")),
    (f"oci://h:1/team/resnet:v1@sha256:{VID}", ("oci://h:1/team", f"resnet@sha256:{VID}")),
    ("oci://[::1]:5000/a/b/c/model:V1.2", ("oci://[::1]:5000/a/b/c", "model@V1.2")),
])
def test_parse_oci_url(url, expected):
    assert parse_oci_url(url) == expected


@pytest.mark.parametrize("url", ["https://h/m", "oci://h", "oci://h/", "oci://h/Model:v1", "oci://h/m:mk-abc.sig",
                                 "oci://h/m@sha256:xyz", "oci://h/m:-bad", "oci://h/Team/m"])
def test_parse_oci_url_refuses(url):
    with pytest.raises(ConfigError):
        parse_oci_url(url)


# ---------------------------------------------------------------- Bearer tokens (GHCR, Harbor, Docker Hub)


class _TokenProxy(http.server.BaseHTTPRequestHandler):
    """In front of the real registry: asks for a Bearer token per repository scope (as GHCR does) and hands one
    out at /token for Basic credentials alice:s3cret."""

    upstream = ""

    def log_message(self, *args):
        pass

    def _reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if self.command != "HEAD" or not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        host = f"127.0.0.1:{self.server.server_address[1]}"
        if self.path.startswith("/token"):
            scope = parse_qs(urlsplit(self.path).query).get("scope", [""])[0]
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"alice:s3cret").decode():
                return self._reply(401)
            return self._reply(200, json.dumps({"token": f"tok:{scope}"}).encode())
        repo = re.match(r"^/v2/(.+?)/(blobs|manifests|tags)/", self.path)
        scope = f"repository:{repo.group(1)}:pull,push" if repo else "registry:catalog:*"
        if self.headers.get("Authorization") != f"Bearer tok:{scope}":
            challenge = f'Bearer realm="http://{host}/token",service="proxy",scope="{scope}"'
            return self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                               [("WWW-Authenticate", challenge)])
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(self.upstream, timeout=30)
        sent = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "host", "connection")}
        upstream.request(self.command, self.path, body=body or None, headers=sent)
        answer = upstream.getresponse()
        data = answer.read()
        headers = [(k, v.replace(self.upstream, host)) for k, v in answer.getheaders()
                   if k.lower() not in ("transfer-encoding", "connection", "content-length")]
        if self.command == "HEAD":
            headers.append(("Content-Length", answer.getheader("Content-Length") or "0"))
        self._reply(answer.status, data, headers)
        upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle


@pytest.fixture()
def token_registry(oci_registry):  # noqa: F811
    handler = type("Proxy", (_TokenProxy,), {"upstream": oci_registry.host})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"oci://127.0.0.1:{server.server_address[1]}/t{uuid.uuid4().hex[:10]}"
    server.shutdown()
    server.server_close()


def test_bearer_token_registries_get_a_token_per_repository(token_registry, tmp_path):
    reg = OciRegistry(token_registry, username="alice", password="s3cret")
    a, b = fine_tune(tmp_path / "a.safetensors", 1), fine_tune(tmp_path / "b.safetensors", 2)
    reg.push(a, "first", alias="production")
    reg.push(b, "second")
    assert sorted(v.name for v in reg.list()) == ["first", "second"]
    assert reg.pull("first@production", tmp_path / "o.safetensors").read_bytes() == a.read_bytes()
    assert reg.pull("second", tmp_path / "o.safetensors").read_bytes() == b.read_bytes()
    with pytest.raises(ConfigError, match="needs credentials"):
        OciRegistry(token_registry).show("first")
    with pytest.raises(ConfigError, match="refused"):
        OciRegistry(token_registry, username="alice", password="wrong").show("first")

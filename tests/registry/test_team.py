"""A team set-up as a new user tries it: one model through the embedded registry, a real S3 server and a real
OCI registry (copy between them, blobs already there skipped), loaded by URL wherever a path works, through the
API and the command line."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from servers import oci_registry, s3_server  # noqa: F401  (fixtures)

import modelkeep
from modelkeep import registry
from modelkeep.artifact import save
from modelkeep.cli.main import main
from modelkeep.nn import build
from modelkeep.registry import EmbeddedRegistry

from task_specs import dense_spec


@pytest.fixture()
def s3_env(s3_server, monkeypatch):  # noqa: F811
    """The endpoint and keys as a user sets them: fsspec's own environment variables, no code."""
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION", "FSSPEC_S3"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("FSSPEC_S3_KEY", s3_server.key)
    monkeypatch.setenv("FSSPEC_S3_SECRET", s3_server.secret)
    bucket = f"team-{uuid.uuid4().hex[:8]}"
    s3_server.filesystem().mkdir(bucket)
    return f"s3://{bucket}/models"


def test_one_model_travels_embedded_to_s3_to_oci_and_loads_by_url(tmp_path, s3_env, oci_registry,  # noqa: F811
                                                                   monkeypatch, capsys):
    monkeypatch.setenv("MODELKEEP_CACHE", str(tmp_path / "cache"))
    base = save(build(dense_spec(4, 3), seed=0), tmp_path / "base.safetensors", metrics={"accuracy": 0.9})
    tuned = save(build(dense_spec(4, 3), seed=1), tmp_path / "tuned.safetensors", parent=base,
                 metrics={"accuracy": 0.95})
    local = EmbeddedRegistry(tmp_path / "local", durable=False)
    local.push(base, "iris")
    local.push(tuned, "iris", alias="production")
    oci = f"oci://{oci_registry.host}/team{uuid.uuid4().hex[:6]}"

    first = registry.copy(local, s3_env, "iris")
    assert first.blobs_sent > 0 and len(first.versions) == 2
    second = registry.copy(s3_env, oci, "iris")
    assert [v.id for v in second.versions] == [v.id for v in first.versions]  # the same ids everywhere
    assert registry.copy(s3_env, oci, "iris").blobs_sent == 0
    assert registry.show("iris@production", registry=oci).parent == registry.show("iris", registry=local).parent

    x = torch.randn(5, 4)
    expected = modelkeep.load(tuned).module(x)
    for url in (f"{s3_env}/iris@production", f"{oci}/iris:production"):
        assert torch.equal(modelkeep.load(url).module(x), expected), url
    assert [v.metrics["accuracy"] for v in registry.list("accuracy>0.92", registry=s3_env)] == [0.95]

    np.save(tmp_path / "x.npy", x.numpy())
    assert main(["predict", f"{s3_env}/iris@production", str(tmp_path / "x.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert main(["lineage", "iris", "--registry", oci]) == 0
    out = capsys.readouterr().out
    assert out.count("iris:") == 2 and "@production" in out
    assert main(["pull", "iris@production", str(tmp_path / "o.safetensors"), "--registry", s3_env]) == 0
    assert (tmp_path / "o.safetensors").read_bytes() == tuned.read_bytes()

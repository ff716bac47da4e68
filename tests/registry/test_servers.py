"""Smoke tests of the real loopback servers the remote registry backends are tested against."""
from __future__ import annotations

import hashlib
import os

import pytest
from servers import oci_registry, oci_registry_auth, s3_server  # noqa: F401  (fixtures)


def _oras_round_trip(registry, tmp_path, repo: str) -> None:
    pytest.importorskip("oras", reason="needs the oras package (pip install oras)")
    payload = b"modelkeep blob\x00" * 1000
    (tmp_path / "blob.bin").write_bytes(payload)
    client = registry.client()
    # oras records the path as given (its title annotation): push a relative name from its folder
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        response = client.push(target=f"{registry.host}/{repo}:v1", files=["blob.bin"])
    finally:
        os.chdir(cwd)
    assert response.status_code == 201
    pulled = client.pull(target=f"{registry.host}/{repo}:v1", outdir=str(tmp_path / "out"))
    assert [p.rsplit("/", 1)[-1] for p in pulled] == ["blob.bin"]
    assert (tmp_path / "out" / "blob.bin").read_bytes() == payload
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    manifest = client.get_manifest(f"{registry.host}/{repo}:v1")
    assert digest in [layer["digest"] for layer in manifest["layers"]]


def test_oci_registry_push_pull(oci_registry, tmp_path):  # noqa: F811
    _oras_round_trip(oci_registry, tmp_path, "smoke/plain")


def test_oci_registry_with_htpasswd(oci_registry_auth, tmp_path):  # noqa: F811
    _oras_round_trip(oci_registry_auth, tmp_path, "smoke/auth")
    import oras.client

    anonymous = oras.client.OrasClient(insecure=True, auth_backend="basic")
    anonymous.auth.set_basic_auth("modelkeep", "wrong-password")
    with pytest.raises(ValueError, match="Unauthorized"):
        anonymous.pull(target=f"{oci_registry_auth.host}/smoke/auth:v1", outdir=str(tmp_path / "denied"))


def test_s3_server_put_get(s3_server):  # noqa: F811
    pytest.importorskip("s3fs", reason="needs the s3fs package (pip install s3fs)")
    fs = s3_server.filesystem()
    fs.mkdir("modelkeep-smoke")
    payload = b"\x00modelkeep object" * 10000
    with fs.open("modelkeep-smoke/blobs/sha256/ab", "wb") as f:
        f.write(payload)
    assert fs.cat("modelkeep-smoke/blobs/sha256/ab") == payload
    assert fs.ls("modelkeep-smoke/blobs/sha256") == ["modelkeep-smoke/blobs/sha256/ab"]
    assert not fs.exists("modelkeep-smoke/blobs/sha256/missing")
    fs.rm("modelkeep-smoke/blobs/sha256/ab")
    assert not fs.exists("modelkeep-smoke/blobs/sha256/ab")

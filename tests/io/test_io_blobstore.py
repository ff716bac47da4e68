"""The content-addressed blob store: SHA-256 names, idempotent puts, reads that refuse damaged bytes."""
from __future__ import annotations

import contextlib
import hashlib
import io
import uuid

import pytest

from modelkeep.errors import ConfigError, FormatError, IntegrityError, ModelNotFoundError
from modelkeep.io.blobstore import BlobStore, FsspecBlobStore, LocalBlobStore, blob_name
from modelkeep.io.committer import MARKER_SUFFIX


@pytest.fixture(params=["local", "fsspec-memory", "fsspec-local"])
def store(request, tmp_path):
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    elif request.param == "fsspec-local":
        yield FsspecBlobStore(str(tmp_path / "blobs"))
    else:
        import fsspec

        root = f"/blobs-{uuid.uuid4().hex}"
        yield FsspecBlobStore(f"memory://{root}")
        with contextlib.suppress(FileNotFoundError):
            fsspec.filesystem("memory").rm(root, recursive=True)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_get_has_list_delete(store: BlobStore):
    digest = store.put(b"weights")
    assert digest == sha(b"weights") and store.has(digest) and store.get(digest) == b"weights"
    assert store.put(b"weights") == digest  # idempotent
    other = store.put(io.BytesIO(b"other bytes"))  # a stream, digest computed on the way
    known = store.put(io.BytesIO(b"known"), digest=sha(b"known"))  # a stream whose digest is known
    assert store.list() == sorted([digest, other, known])
    store.delete(digest)
    store.delete(digest)  # deleting a missing blob is not an error
    assert not store.has(digest) and store.list() == sorted([other, known])
    with pytest.raises(ModelNotFoundError, match=digest):
        store.get(digest)


def test_blobs_live_in_fan_out_folders(store):
    digest = store.put(b"x")
    assert blob_name(digest) == f"{digest[:2]}/{digest[2:]}"
    assert store.committer.names(recursive=True) == [blob_name(digest)]


def test_a_wrong_digest_stores_nothing(store):
    for data in (b"real", io.BytesIO(b"real")):
        with pytest.raises(IntegrityError, match="nothing was stored"):
            store.put(data, digest=sha(b"claimed"))
    assert store.list() == []


def test_get_refuses_bytes_that_do_not_hash_to_their_name(store):
    digest = store.put(b"original")
    with store.committer.writing(blob_name(digest)) as handle:  # damaged or substituted behind the store's back
        handle.write(b"tampered")
    with pytest.raises(IntegrityError, match="damaged"):
        store.get(digest)


def test_get_is_bounded(store):
    digest = store.put(b"x" * 1000)
    with pytest.raises(FormatError, match="max_bytes"):
        store.get(digest, max_bytes=999)
    assert store.get(digest, max_bytes=1000) == b"x" * 1000


@pytest.mark.parametrize("bad", ["ABC", "sha256:" + "0" * 64, "0" * 63, "g" * 64, "../" + "0" * 61])
def test_malformed_digests_are_refused(store, bad):
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        store.has(bad)


def test_an_interrupted_fsspec_put_is_absent_and_cleaned():
    store = FsspecBlobStore(f"memory:///blobs-{uuid.uuid4().hex}")
    digest = sha(b"half")
    store.committer.fs.pipe_file(store.committer.path(blob_name(digest)), b"half")  # payload, no marker
    assert not store.has(digest) and store.list() == []
    assert store.put(b"half") == digest and store.has(digest)  # a later put completes it
    orphan = sha(b"orphan")
    store.committer.fs.pipe_file(store.committer.path(blob_name(orphan)), b"orphan")
    assert store.clean() == [blob_name(orphan)]
    assert not store.committer.fs.exists(store.committer.path(blob_name(orphan)) + MARKER_SUFFIX)

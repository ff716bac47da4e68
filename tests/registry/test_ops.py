"""What every backend shares (registry/ops.py, refs.py), checked on the embedded one: lineage, copy, progress,
tensors cut into parts, registry URLs wherever a path works."""
from __future__ import annotations

import json

import pytest
import torch

import modelkeep
from modelkeep import registry
from modelkeep.artifact import save
from modelkeep.cli.main import main
from modelkeep.errors import ConfigError, ModelNotFoundError
from modelkeep.nn import build
from modelkeep.registry import EmbeddedRegistry, layout
from modelkeep.registry.refs import is_registry_url, split_url

from registry_files import fine_tune, write_model
from task_specs import dense_spec


@pytest.fixture()
def reg(tmp_path):
    return EmbeddedRegistry(tmp_path / "registry", durable=False)


def _model(seed):
    return build(dense_spec(4, 3), seed=seed)


def test_lineage_follows_the_parent_a_fine_tuned_file_records(reg, tmp_path):
    base = save(_model(0), tmp_path / "base.safetensors")
    child = save(_model(1), tmp_path / "child.safetensors", parent=base)
    grandchild = save(_model(2), tmp_path / "grandchild.safetensors", parent=child)
    other = save(_model(3), tmp_path / "other.safetensors")
    base_v = reg.push(base, "base", alias="production")
    child_v = reg.push(child, "digits")  # no --parent: found by the content hash the file's lineage names
    grand_v = reg.push(grandchild, "digits", alias="best")
    reg.push(other, "digits", parent=f"base:{base_v.id}")  # explicit
    assert child_v.parent == base_v.id and grand_v.parent == child_v.id
    [root] = reg.lineage("digits")
    assert root.version.id == base_v.id
    assert [n.version.id for n in root.children][0] == child_v.id
    assert root.children[0].children[0].version.id == grand_v.id
    assert len(root.children) == 2
    with pytest.raises(ModelNotFoundError, match="nothing"):
        reg.lineage("nothing")


def test_lineage_from_the_command_line(reg, tmp_path, capsys):
    base = save(_model(0), tmp_path / "base.safetensors")
    child = save(_model(1), tmp_path / "child.safetensors", parent=base)
    args = ["--registry", str(reg.root)]
    assert main(["push", str(base), "base", *args]) == 0
    assert main(["push", str(child), "digits", "--alias", "production", *args]) == 0
    capsys.readouterr()
    assert main(["lineage", "digits", *args]) == 0
    out = capsys.readouterr().out
    assert out.index("base:") < out.index("digits:") and "@production" in out and "└──" in out
    assert main(["lineage", "digits", "--json", *args]) == 0
    [tree] = json.loads(capsys.readouterr().out)
    assert tree["name"] == "base" and tree["children"][0]["aliases"] == ["production"]


def test_copy_sends_only_what_the_destination_lacks(tmp_path):
    source = EmbeddedRegistry(tmp_path / "a", durable=False)
    destination = EmbeddedRegistry(tmp_path / "b", durable=False)
    files = [fine_tune(tmp_path / f"f{i}.safetensors", i, metrics={"accuracy": 0.5 + i / 10}) for i in range(3)]
    for i, path in enumerate(files):
        source.push(path, "ft", alias="production" if i == 1 else None, card=f"# card {i}\n")
    report = registry.copy(source, destination, "ft")
    assert [v.id for v in report.versions] == [v.id for v in source.list()]
    # the frozen backbone is sent once: every later version finds it there
    assert report.blobs_skipped >= 2 * 8
    assert destination.show("ft@production").id == source.show("ft@production").id
    assert destination.card("ft@production") == "# card 1\n"
    assert destination.show("ft").metrics == source.show("ft").metrics
    for path, version in zip(files, report.versions):
        assert destination.pull(f"ft:{version.id}", tmp_path / "o.safetensors").read_bytes() == path.read_bytes()
    again = registry.copy(source, destination, "ft")
    assert again.blobs_sent == 0 and again.bytes_sent == 0


def test_copy_from_the_command_line(tmp_path, capsys):
    path = fine_tune(tmp_path / "m.safetensors", 1)
    assert main(["push", str(path), "m", "--registry", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(["copy", str(tmp_path / "a"), str(tmp_path / "b"), "m"]) == 0
    assert "copied 1 version(s) of m" in capsys.readouterr().out
    assert main(["copy", str(tmp_path / "a"), str(tmp_path / "b"), "m"]) == 0
    assert "0 blob(s) sent" in capsys.readouterr().out
    assert main(["copy", str(tmp_path / "a"), str(tmp_path / "b"), "missing"]) == 2


def test_progress_counts_every_byte_of_push_and_pull(reg, tmp_path):
    path = fine_tune(tmp_path / "m.safetensors", 1)
    pushed, pulled = [], []
    reg.push(path, "m", progress=pushed.append)
    reg.pull("m", tmp_path / "o.safetensors", progress=pulled.append)
    assert sum(pushed) == sum(pulled) == path.stat().st_size


def test_large_tensors_are_stored_in_parts(tmp_path):
    store = EmbeddedRegistry(tmp_path / "registry", durable=False)
    path = write_model(tmp_path / "big.safetensors", {"big": torch.arange(100_000, dtype=torch.float32),
                                                      "small": torch.ones(3)})
    manifest = layout.split(path, store.blobs, segment_bytes=64 << 10)
    parts = [s for s in manifest["segments"] if s["tensor"] == "big"]
    assert len(parts) == 7 and all(p["size"] <= 64 << 10 for p in parts)
    out = layout.rebuild(manifest, store.blobs, tmp_path / "o.safetensors", durable=False)
    assert out.read_bytes() == path.read_bytes()


def test_registry_urls_load_wherever_a_path_works(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODELKEEP_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("MODELKEEP_CACHE", str(tmp_path / "cache"))
    path = save(_model(0), tmp_path / "m.safetensors")
    version = registry.push(path, "iris", alias="production")
    model = modelkeep.load("registry://iris@production")
    x = torch.randn(2, 4)
    assert torch.equal(model.module(x), modelkeep.load(path).module(x))
    assert (tmp_path / "cache" / f"{version.id}.safetensors").read_bytes() == path.read_bytes()
    assert modelkeep.load(f"registry://iris:{version.id[:8]}").content_hash == model.content_hash
    assert main(["inspect", "registry://iris@production"]) == 0
    assert "Dense" in capsys.readouterr().out
    import numpy as np

    np.save(tmp_path / "x.npy", np.ones((2, 4), dtype=np.float32))
    assert main(["predict", "registry://iris@production", str(tmp_path / "x.npy")]) == 0
    capsys.readouterr()
    assert main(["predict", "registry://iris@nothing", str(tmp_path / "x.npy")]) == 2
    assert "iris@nothing" in capsys.readouterr().err


def test_registry_url_forms():
    assert is_registry_url("registry://m@a") and is_registry_url("s3://b/p/m") and not is_registry_url("m.safetensors")
    assert not is_registry_url("https://example.com/m")
    assert split_url("registry://m@production") == (None, "m@production")
    assert split_url("s3://bucket/team/models/m@production") == ("s3://bucket/team/models", "m@production")
    assert split_url("memory://reg/m:abcd") == ("memory://reg", "m:abcd")
    for bad in ("s3://bucket", "registry://bad name", "s3://bucket/p/m:xyz!"):
        with pytest.raises(ConfigError):
            split_url(bad)


def test_an_interrupted_push_leaves_no_version_and_resumes_without_resending(reg, tmp_path, monkeypatch):
    path = fine_tune(tmp_path / "m.safetensors", 1)
    committer = reg.blobs.committer
    real_writing = committer.writing
    written = []

    def writing(name, **options):
        if len(written) == 5 and not getattr(writing, "resumed", False):
            raise KeyboardInterrupt  # the push dies after five blobs arrived
        written.append(name)
        return real_writing(name, **options)

    monkeypatch.setattr(committer, "writing", writing)
    with pytest.raises(KeyboardInterrupt):
        reg.push(path, "m")
    assert reg.list() == [] and len(written) == 5
    writing.resumed = True
    version = reg.push(path, "m")
    resent = written[5:]
    assert not set(resent) & set(written[:5])  # what arrived was not sent again
    assert reg.pull(f"m:{version.id}", tmp_path / "o.safetensors").read_bytes() == path.read_bytes()


def test_signed_versions_verify_on_pull_and_load_and_tampering_is_refused(reg, tmp_path, monkeypatch):
    from modelkeep.artifact.signing import generate_keys
    from modelkeep.errors import SignatureError

    generate_keys(tmp_path / "key.pem", tmp_path / "key.pub")
    generate_keys(tmp_path / "other.pem", tmp_path / "other.pub")
    path = save(_model(0), tmp_path / "m.safetensors")
    unsigned = reg.push(path, "m", alias="unsigned")
    out = tmp_path / "out.safetensors"
    with pytest.raises(SignatureError, match="not signed"):
        reg.pull("m@unsigned", out, require_signature=tmp_path / "key.pub")
    assert not out.exists()
    registry.sign(f"m:{unsigned.id}", tmp_path / "key.pem", registry=reg)  # sign a version already published
    assert reg.pull("m@unsigned", out, require_signature=tmp_path / "key.pub").read_bytes() == path.read_bytes()
    assert (tmp_path / "out.safetensors.sig").exists()
    out.unlink()
    with pytest.raises(SignatureError, match="m:"):
        reg.pull("m", out, require_signature=tmp_path / "other.pub")  # someone else's key
    assert not out.exists()
    bundle = json.loads(reg.attachment("m", unsigned.id, "signature"))
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = "A" * 20 + bundle["dsseEnvelope"]["signatures"][0]["sig"][20:]
    reg.attach("m", unsigned.id, "signature", json.dumps(bundle).encode())
    with pytest.raises(SignatureError):
        reg.pull("m", out, require_signature=tmp_path / "key.pub")
    assert not out.exists()
    registry.sign(f"m:{unsigned.id}", tmp_path / "key.pem", registry=reg)
    monkeypatch.setenv("MODELKEEP_REGISTRY", str(reg.root))
    monkeypatch.setenv("MODELKEEP_CACHE", str(tmp_path / "cache"))
    model = modelkeep.load("registry://m@unsigned", require_signature=tmp_path / "key.pub")
    assert model.content_hash == modelkeep.load(path).content_hash
    with pytest.raises(SignatureError):
        modelkeep.load("registry://m@unsigned", require_signature=tmp_path / "other.pub")


def test_push_sign_and_pull_require_signature_from_the_command_line(tmp_path, capsys):
    from modelkeep.artifact.signing import generate_keys

    generate_keys(tmp_path / "key.pem", tmp_path / "key.pub")
    path = save(_model(0), tmp_path / "m.safetensors")
    args = ["--registry", str(tmp_path / "reg")]
    assert main(["push", str(path), "m", "--sign", str(tmp_path / "key.pem"), *args]) == 0
    out = tmp_path / "pulled.safetensors"
    assert main(["pull", "m", str(out), "--require-signature", str(tmp_path / "key.pub"), *args]) == 0
    assert "signature verified" in capsys.readouterr().out and out.read_bytes() == path.read_bytes()
    other = save(_model(1), tmp_path / "other.safetensors")
    assert main(["push", str(other), "m", "--alias", "bare", *args]) == 0
    capsys.readouterr()
    assert main(["pull", "m@bare", str(tmp_path / "bare.safetensors"), "--require-signature",
                 str(tmp_path / "key.pub"), *args]) == 2
    err = capsys.readouterr().err
    assert "not signed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bare.safetensors").exists()


def test_oversize_cards_and_signatures_are_refused_before_they_are_read(reg, tmp_path, capsys):
    path = fine_tune(tmp_path / "m.safetensors", 1)
    card = tmp_path / "card.md"
    with open(card, "wb") as handle:  # sparse: 17 MiB declared, nothing allocated
        handle.truncate(layout.MAX_CARD_BYTES + 1)
    assert main(["push", str(path), "m", "--card", str(card), "--registry", str(reg.root)]) == 2
    err = capsys.readouterr().err
    assert "over the limit" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="a card is at most"):
        reg.push(path, "m", card="x" * (layout.MAX_CARD_BYTES + 1))
    with open(str(path) + ".sig", "wb") as handle:
        handle.truncate(2 << 20)
    with pytest.raises(modelkeep.FormatError, match="a signature is at most"):
        reg.push(path, "m")

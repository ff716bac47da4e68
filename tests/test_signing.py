"""Signatures (issue 13, "Trust"): OpenSSF model-signing bundles over real model files, key-based and offline.

Every test signs and checks real modelkeep files with real keys through the real model-signing package:
a good signature verifies; one edited byte of the file, a signature by another key, an edited bundle, a
missing or oversize signature are refused with ``SignatureError`` naming the file and what to do;
``load(require_signature=...)`` checks before reading anything; a failed sign keeps the previous
signature; the CLI answers in one line, status 2 on refusal.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("model_signing")

from modelkeep.artifact import load, save
from modelkeep.artifact.signing import (MAX_KEY_BYTES, MAX_SIGNATURE_BYTES, generate_keys, sign_file,
                                        signature_path, verify_file)
from modelkeep.cli.main import main
from modelkeep.errors import ConfigError, ModelNotFoundError, SignatureError, StorageError
from modelkeep.nn import build
from task_specs import dense_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("keys")
    ours = generate_keys(folder / "private.pem", folder / "public.pem")
    theirs = generate_keys(folder / "other_private.pem", folder / "other_public.pem")
    return {"private": folder / "private.pem", "public": folder / "public.pem", "fingerprint": ours["key_fingerprint"],
            "other_private": folder / "other_private.pem", "other_public": folder / "other_public.pem",
            "other_fingerprint": theirs["key_fingerprint"]}


@pytest.fixture()
def model_file(tmp_path) -> Path:
    return Path(save(build(dense_spec(4, 3), seed=0), tmp_path / "model.safetensors"))


@pytest.fixture()
def signed(model_file, keys) -> Path:
    sign_file(model_file, keys["private"])
    return model_file


def _flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_bundle(sig: Path, edit) -> None:
    bundle = json.loads(sig.read_text())
    edit(bundle)
    sig.write_text(json.dumps(bundle))


# --- sign and verify --------------------------------------------------------------------------------------------


def test_sign_then_verify_reports_the_key_and_the_files_sha256(signed, keys):
    sig = Path(f"{signed}.sig")
    assert sig.is_file() and signature_path(signed) == sig
    report = verify_file(signed, keys["public"])
    assert report["verified"] is True
    assert report["sha256"] == hashlib.sha256(signed.read_bytes()).hexdigest()
    assert report["key_fingerprint"] == keys["fingerprint"]
    assert report["signature"] == str(sig) and report["file"] == str(signed)
    assert not [p for p in signed.parent.iterdir() if "modelkeep-tmp" in p.name]  # the scratch bundle is gone


def test_a_signature_written_elsewhere_is_verified_from_there(model_file, keys, tmp_path):
    out = tmp_path / "elsewhere" / "model.bundle"
    out.parent.mkdir()
    assert sign_file(model_file, keys["private"], signature=out) == out
    assert not Path(f"{model_file}.sig").exists()
    assert verify_file(model_file, keys["public"], signature=out)["verified"]


def test_a_renamed_copy_still_verifies(signed, keys, tmp_path):
    copy = tmp_path / "renamed.safetensors"
    copy.write_bytes(signed.read_bytes())
    Path(f"{copy}.sig").write_bytes(Path(f"{signed}.sig").read_bytes())
    assert verify_file(copy, keys["public"])["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()


def test_one_edited_byte_of_the_file_is_tampering(signed, keys):
    _flip_byte(signed)
    with pytest.raises(SignatureError, match="modified after it was signed") as caught:
        verify_file(signed, keys["public"])
    assert str(signed) in str(caught.value)


def test_a_signature_by_another_key_is_refused_naming_both_keys(model_file, keys):
    sign_file(model_file, keys["other_private"])
    with pytest.raises(SignatureError, match="made with another key") as caught:
        verify_file(model_file, keys["public"])
    assert keys["other_fingerprint"][:16] in str(caught.value) and keys["fingerprint"][:16] in str(caught.value)


def test_another_keys_signature_claiming_our_key_does_not_verify(model_file, keys):
    sign_file(model_file, keys["other_private"])
    sig = Path(f"{model_file}.sig")
    _edit_bundle(sig, lambda b: b["verificationMaterial"]["publicKey"].update(hint=keys["fingerprint"]))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_file(model_file, keys["public"])


def test_an_edited_payload_does_not_verify(signed, keys):
    """The attacker edits the signed JSON (the file's digest, to match a swapped file): the signature breaks."""
    sig = Path(f"{signed}.sig")

    def edit(bundle):
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"]).decode()
        digest = json.loads(payload)["predicate"]["resources"][0]["digest"]
        changed = payload.replace(digest, ("0" if digest[0] != "0" else "1") + digest[1:])
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(changed.encode()).decode()

    _edit_bundle(sig, edit)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_file(signed, keys["public"])


def test_an_edited_signature_value_does_not_verify(signed, keys):
    sig = Path(f"{signed}.sig")

    def edit(bundle):
        raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
        raw[-1] ^= 0x01
        bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()

    _edit_bundle(sig, edit)
    with pytest.raises(SignatureError):
        verify_file(signed, keys["public"])


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b"{\"dsseEnvelope\": 3}", b"[" * 100_000,
                                     b'{"verificationMaterial": {"publicKey": {}}, "dsseEnvelope": {"payload": "e30="}}'])
def test_a_malformed_signature_is_refused(model_file, keys, content):
    Path(f"{model_file}.sig").write_bytes(content)
    with pytest.raises(SignatureError, match="sign the file again"):
        verify_file(model_file, keys["public"])


def test_a_changed_character_in_the_bundle_text_is_refused(signed, keys):
    sig = Path(f"{signed}.sig")
    text = sig.read_text()
    at = re.search(r'"payload":\s*"', text).end() + 40
    sig.write_text(text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:])
    with pytest.raises(SignatureError):
        verify_file(signed, keys["public"])


def test_an_unsigned_file_is_refused_saying_how_to_sign_it(model_file, keys):
    with pytest.raises(SignatureError, match=r"^unsigned: no .*model\.safetensors\.sig; sign it with `modelkeep sign"):
        verify_file(model_file, keys["public"])


def test_an_oversize_signature_is_refused_before_it_is_read(model_file, keys, monkeypatch):
    sig = Path(f"{model_file}.sig")
    with open(sig, "wb") as handle:
        handle.truncate(MAX_SIGNATURE_BYTES + 1)  # sparse: costs no disk
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda file, *a, **k: opened.append(str(file)) or real_open(file, *a, **k))
    with pytest.raises(SignatureError, match=f"over the limit of {MAX_SIGNATURE_BYTES}"):
        verify_file(model_file, keys["public"])
    assert str(sig) not in opened


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_signature_that_is_not_a_regular_file_is_refused_without_blocking(model_file, keys):
    os.mkfifo(f"{model_file}.sig")
    with pytest.raises(SignatureError, match="not a regular file"):
        verify_file(model_file, keys["public"])


def test_a_failed_sign_leaves_the_previous_signature_intact(signed, keys, monkeypatch):
    sig = Path(f"{signed}.sig")
    before = sig.read_bytes()
    with pytest.raises(ConfigError, match="holds a public key"):
        sign_file(signed, keys["public"])  # a public key where the private one belongs
    import model_signing.signing

    def broken(self, model_path, signature_path):
        Path(signature_path).write_text("half a bundle")
        raise ValueError("the disk went away")

    monkeypatch.setattr(model_signing.signing.Config, "sign", broken)
    with pytest.raises(ConfigError, match="the disk went away"):
        sign_file(signed, keys["private"])
    assert sig.read_bytes() == before
    assert sorted(p.name for p in signed.parent.iterdir()) == [signed.name, sig.name]
    assert verify_file(signed, keys["public"])["verified"]


def test_a_signature_that_cannot_be_written_names_the_destination(model_file, keys, tmp_path):
    out = tmp_path / "no" / "such" / "folder" / "model.sig"
    with pytest.raises(StorageError, match="cannot write .*model.sig") as caught:
        sign_file(model_file, keys["private"], signature=out)
    assert "modelkeep-tmp" not in str(caught.value)


def test_signing_a_missing_file_or_a_folder_is_refused(tmp_path, keys):
    with pytest.raises(ModelNotFoundError):
        sign_file(tmp_path / "absent.safetensors", keys["private"])
    with pytest.raises(ConfigError, match="is a folder"):
        sign_file(tmp_path, keys["private"])


# --- keys -------------------------------------------------------------------------------------------------------


def test_generated_keys_are_pem_with_a_private_mode_and_are_never_replaced(tmp_path):
    made = generate_keys(tmp_path / "k.pem", tmp_path / "k.pub")
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert made["key_fingerprint"] == hashlib.sha256(public.read_bytes()).hexdigest()
    if os.name == "posix":
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    before = private.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        generate_keys(private, tmp_path / "new.pub")
    assert private.read_bytes() == before and not (tmp_path / "new.pub").exists()
    with pytest.raises(ConfigError, match="two different files"):
        generate_keys(tmp_path / "same.pem", tmp_path / "same.pem")


def test_unusable_keys_are_refused_saying_what_is_wrong(signed, keys, tmp_path):
    with pytest.raises(ModelNotFoundError, match="modelkeep keygen"):
        verify_file(signed, tmp_path / "absent.pem")
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (MAX_KEY_BYTES + 1))
    with pytest.raises(ConfigError, match="over the limit"):
        verify_file(signed, big)
    with pytest.raises(ConfigError, match="holds a private key"):
        verify_file(signed, keys["private"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        verify_file(signed, garbage)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ConfigError, match="encrypted"):
        sign_file(signed, encrypted)
    edwards = tmp_path / "ed25519.pem"
    edwards.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ConfigError, match="not an elliptic-curve key"):
        sign_file(signed, edwards)


def test_without_model_signing_installed_the_error_says_what_to_install(signed, keys, monkeypatch):
    monkeypatch.setitem(sys.modules, "model_signing.verifying", None)
    with pytest.raises(ConfigError, match=r"pip install modelkeep\[sign\]"):
        verify_file(signed, keys["public"])


# --- load(require_signature=...) ---------------------------------------------------------------------------------


def test_load_with_a_required_signature(signed, keys):
    model = load(signed, require_signature=keys["public"])
    assert model.predict(np.zeros((2, 4), dtype=np.float32)).probabilities.shape == (2, 3)


def test_load_refuses_a_tampered_file(signed, keys):
    _flip_byte(signed)
    with pytest.raises(SignatureError, match="modified after it was signed"):
        load(signed, require_signature=keys["public"])


def test_load_refuses_an_unsigned_file_before_reading_it(tmp_path, keys):
    """Not even the header of an unsigned file is read: garbage is refused as unsigned, not as malformed."""
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(SignatureError, match="^unsigned"):
        load(garbage, require_signature=keys["public"])


def test_load_refuses_a_signature_by_another_key(model_file, keys):
    sign_file(model_file, keys["other_private"])
    with pytest.raises(SignatureError, match="another key"):
        load(model_file, require_signature=keys["public"])
    assert load(model_file, require_signature=keys["other_public"]) is not None


def test_loading_without_a_signature_never_imports_model_signing():
    fixture = ROOT / "tests" / "fixtures" / "format_v1" / "digits_mlp.safetensors"
    code = ("import sys, modelkeep; modelkeep.load(%r); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('model_signing', 'sigstore')))" % str(fixture))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- the command line --------------------------------------------------------------------------------------------


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _one_line_error(status: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("modelkeep: error: "), (status, err)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_keygen_sign_verify_and_predict(model_file, tmp_path, capsys):
    private, public = tmp_path / "cli.pem", tmp_path / "cli.pub"
    status, out, _ = _run(capsys, "keygen", private, public)
    assert status == 0 and out.count("\n") == 1 and "key " in out
    status, out, _ = _run(capsys, "sign", model_file, "--key", private)
    assert status == 0 and f"{model_file}.sig" in out
    status, out, _ = _run(capsys, "verify", model_file, "--key", public)
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert status == 0 and out.count("\n") == 1 and out.startswith("verified ") and f"sha256 {sha}" in out
    status, out, _ = _run(capsys, "verify", model_file, "--key", public, "--json")
    assert status == 0 and json.loads(out)["sha256"] == sha
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((2, 4), dtype=np.float32))
    status, out, _ = _run(capsys, "predict", model_file, inputs, "--json", "--require-signature", public)
    assert status == 0 and len(json.loads(out)) == 2
    bundle = tmp_path / "custom.sig"
    assert _run(capsys, "sign", model_file, "--key", private, "--signature", bundle)[0] == 0
    assert _run(capsys, "verify", model_file, "--key", public, "--signature", bundle)[0] == 0


def test_cli_refusals_are_one_line_with_status_2(model_file, keys, tmp_path, capsys):
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((2, 4), dtype=np.float32))
    _one_line_error(*_run(capsys, "verify", model_file, "--key", keys["public"])[::2], "unsigned", "modelkeep sign")
    _one_line_error(*_run(capsys, "predict", model_file, inputs, "--require-signature", keys["public"])[::2],
                    "unsigned")
    sign_file(model_file, keys["private"])
    _one_line_error(*_run(capsys, "verify", model_file, "--key", keys["other_public"])[::2], "another key")
    _flip_byte(model_file)
    _one_line_error(*_run(capsys, "verify", model_file, "--key", keys["public"])[::2], "tampered")
    _one_line_error(*_run(capsys, "predict", model_file, inputs, "--require-signature", keys["public"])[::2],
                    "tampered")
    _one_line_error(*_run(capsys, "keygen", keys["private"], tmp_path / "new.pub")[::2], "already exists")
    _one_line_error(*_run(capsys, "sign", model_file, "--key", tmp_path / "absent.pem")[::2], "no private key")


def test_cli_console_script_refuses_in_one_line(signed, keys):
    _flip_byte(signed)
    result = subprocess.run([sys.executable, "-m", "modelkeep", "verify", str(signed), "--key", str(keys["public"])],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    _one_line_error(result.returncode, result.stderr, "modified after it was signed")
    assert result.stdout == ""

"""Signatures over model files: OpenSSF model-signing bundles made and checked with an EC key pair, offline.

``sign_file`` writes ``PATH.sig``, a Sigstore bundle whose DSSE payload lists
the SHA-256 of the file's bytes (model-signing's manifest of one file), signed
with a private key; ``verify_file`` checks it against the public key and the
file as it is now; ``generate_keys`` makes a P-256 pair. Nothing goes to a
transparency log or over the network: who holds which key is the team's affair.

model-signing (and cryptography) are imported inside the functions, so loading
a model without a signature never imports them. Every file read here is
bounded and checked before it is read (a signature at most 1 MiB, a key 64
KiB). This module never opens a destination for writing except through
``io.atomic``; the scratch file model-signing writes a bundle to is a
temporary beside the destination, removed before returning.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelNotFoundError, SignatureError, StorageError
from ..io.atomic import atomic_write, atomic_write_bytes, temporary_name
from ..io.capped import read_capped

SIGNATURE_SUFFIX = ".sig"
MAX_SIGNATURE_BYTES = 1 << 20
MAX_KEY_BYTES = 64 << 10
# The curves model-signing accepts (Sigstore's protobuf specs); generate_keys makes the first.
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_INSTALL = "signatures need the optional dependency: pip install modelkeep[sign]"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

PathArg = str | os.PathLike[str]


def signature_path(path: PathArg, signature: PathArg | None = None) -> Path:
    """Where the signature of ``path`` lives: ``signature`` when given, else ``PATH.sig`` beside the file."""
    return Path(signature) if signature is not None else Path(f"{os.fspath(path)}{SIGNATURE_SUFFIX}")


def sign_file(path: PathArg, private_key: PathArg, *, signature: PathArg | None = None) -> Path:
    """Sign the bytes of the file ``path`` with ``private_key`` (a PEM EC key file); return where the bundle went.

    The bundle goes to ``signature`` (default ``PATH.sig``), replaced atomically: if signing fails, a previous
    signature there is left exactly as it was.
    """
    source = _model_file(path)
    key_path = Path(private_key)
    _read_key(key_path, private=True)  # a clear error before model-signing sees the file
    destination = signature_path(path, signature)
    signing = _import("model_signing.signing")
    scratch = temporary_name(destination)
    try:
        try:
            signing.Config().use_elliptic_key_signer(private_key=key_path).sign(source, scratch)
        except (ValueError, TypeError) as exc:  # what the checks above missed: model-signing's own refusals
            raise ConfigError(f"cannot sign {path} with {key_path}: {exc}") from None
        except OSError as exc:
            if exc.filename is None or Path(exc.filename) != scratch:
                raise
            raise StorageError(f"cannot write {destination}: {exc.strerror or exc}; check that its folder exists "
                               "and is writable, or choose another path", errno=exc.errno) from None
        data = read_capped(scratch, MAX_SIGNATURE_BYTES,
                             lambda why: SignatureError(f"the signature model-signing made for {path} is {why}"))
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()  # our own scratch file, never the destination
    return atomic_write_bytes(destination, data)


def verify_file(path: PathArg, public_key: PathArg, *, signature: PathArg | None = None) -> dict[str, Any]:
    """Check that ``path`` is, byte for byte, the file the holder of ``public_key``'s private key signed.

    The signature is read from ``signature`` (default ``PATH.sig``). Returns what was verified: the file, the
    signature, the key and its fingerprint (SHA-256 of its PEM, model-signing's key hint) and the file's SHA-256.
    Raises ``SignatureError`` when the signature is missing, too large, malformed, made with another key, or no
    longer matches the file (tampered), and ``ConfigError``/``ModelNotFoundError`` for an unusable key.
    """
    source = _model_file(path)
    sig = signature_path(path, signature)
    key_path = Path(public_key)
    fingerprint = _fingerprint(_read_key(key_path, private=False))
    data = _read_signature(path, sig)
    digest = _signed_digest(data, path, sig, key_path, fingerprint)
    verifying = _import("model_signing.verifying")
    from cryptography.exceptions import InvalidSignature

    try:
        verifying.Config().use_elliptic_key_verifier(public_key=key_path).verify(source, sig)
    except InvalidSignature:
        raise SignatureError(f"{sig} does not verify with {key_path}: the signature was altered, or made with "
                             f"another key, so {path} cannot be trusted; get a genuine signature (or re-sign "
                             "it with `modelkeep sign` if you own the private key)") from None
    except ValueError as exc:
        if str(exc).startswith("Signature mismatch"):
            raise SignatureError(f"{path} was modified after it was signed (tampered): its SHA-256 no longer "
                                 f"matches {sig}; do not use it: fetch the genuine file again (or, if you changed "
                                 "it yourself, sign it again with `modelkeep sign`)") from None
        raise _malformed(sig, exc) from None
    except (KeyError, TypeError, IndexError, AttributeError, RecursionError) as exc:
        raise _malformed(sig, exc) from None
    if _read_signature(path, sig) != data:
        raise SignatureError(f"{sig} changed while it was being verified; verify {path} again")
    return {"verified": True, "file": str(path), "signature": str(sig), "key": str(key_path),
            "key_fingerprint": fingerprint, "sha256": digest}


def generate_keys(private_out: PathArg, public_out: PathArg) -> dict[str, str]:
    """Make an EC P-256 key pair as PEM files: ``private_out`` (PKCS#8, unencrypted, mode 0600) and ``public_out``.

    Existing files are never replaced (losing a private key cannot be undone): ``ConfigError``. Returns the
    paths and the public key's fingerprint, the one ``verify_file`` reports.
    """
    private_path, public_path = Path(private_out), Path(public_out)
    if private_path.resolve() == public_path.resolve():
        raise ConfigError(f"the private and the public key must go to two different files, got {private_path} "
                          "twice")
    for target in (private_path, public_path):
        if os.path.lexists(target):
            raise ConfigError(f"{target} already exists; keys are never replaced (a lost private key cannot be "
                              "recovered): move it away or choose another name")
    _import("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    with atomic_write(private_path) as handle:
        os.chmod(handle.name, 0o600)  # before a byte of the key is written
        handle.write(private_pem)
    atomic_write_bytes(public_path, _public_pem(key.public_key()))
    return {"private_key": str(private_path), "public_key": str(public_path),
            "key_fingerprint": _fingerprint(key.public_key())}


def _model_file(path: PathArg) -> Path:
    """The file to sign or check, symlinks resolved (model-signing refuses them): it must exist and be a file."""
    given = Path(path)
    if not given.exists():
        raise ModelNotFoundError(f"no file {given} to sign or verify; check the path")
    if given.is_dir():
        raise ConfigError(f"{given} is a folder; signatures here cover one file: give the model file inside it")
    return given.resolve()


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{_INSTALL} ({exc})") from None


def _read_signature(path: PathArg, sig: Path) -> bytes:
    try:
        return read_capped(sig, MAX_SIGNATURE_BYTES, lambda why: SignatureError(
            f"{sig} (the signature of {path}) is {why}; it is not a signature modelkeep made: sign the file "
            "again with `modelkeep sign`"))
    except FileNotFoundError:
        raise SignatureError(f"unsigned: no {sig}; sign it with `modelkeep sign {path} --key PRIVATE.pem` "
                             f"(or modelkeep.sign_file), or get {Path(sig).name} from whoever published "
                             f"{Path(path).name}") from None


def _malformed(sig: Path, why: object) -> SignatureError:
    text = str(why) or type(why).__name__
    text = text if len(text) <= 200 else text[:200] + "..."
    return SignatureError(f"{sig} is not a valid model-signing bundle ({text}); sign the file again with "
                          "`modelkeep sign`")


def _signed_digest(data: bytes, path: PathArg, sig: Path, key_path: Path, fingerprint: str) -> str:
    """The SHA-256 the bundle claims for the file, read (not trusted: model-signing checks it) from its payload,
    after checking the bundle names ``fingerprint`` as its key. Malformed or another key: ``SignatureError``."""
    try:
        bundle = json.loads(data)
        hint = bundle["verificationMaterial"]["publicKey"].get("hint")
        payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True))
        resources = payload["predicate"]["resources"]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, binascii.Error) as exc:
        raise _malformed(sig, exc) from None
    if not isinstance(hint, str) or not hint:
        raise _malformed(sig, "it does not name the key that made it (an older model-signing format)")
    if hint != fingerprint:
        raise SignatureError(f"{sig} was made with another key (fingerprint {hint[:16]}...), not the pair of "
                             f"{key_path} (fingerprint {fingerprint[:16]}...); {path} cannot be trusted with "
                             "this key: check you have the right public key, or get a signature made with it")
    if not (isinstance(resources, list) and len(resources) == 1 and isinstance(resources[0], dict)):
        raise _malformed(sig, "it does not cover exactly one file")
    resource = resources[0]
    digest = resource.get("digest")
    if resource.get("algorithm") != "sha256" or not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        raise _malformed(sig, "its file digest is not a SHA-256")
    return digest


def _read_key(path: Path, *, private: bool) -> Any:
    """The EC key in the PEM file ``path`` (bounded read); ``ConfigError`` saying what is wrong with it."""
    what = "private" if private else "public"
    try:
        data = read_capped(path, MAX_KEY_BYTES, lambda why: ConfigError(
            f"the {what} key {path} is {why}; give the PEM file `modelkeep keygen` wrote"))
    except FileNotFoundError:
        raise ModelNotFoundError(f"no {what} key at {path}; make a pair with `modelkeep keygen PRIVATE.pem "
                                 "PUBLIC.pem`, or check the path") from None
    _import("cryptography")
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(data, None) if private else serialization.load_pem_public_key(data)
    except TypeError:
        raise ConfigError(f"the private key {path} is encrypted; modelkeep signs with an unencrypted key kept "
                          "private by its file mode (0600): decrypt a copy (`openssl pkey -in KEY -out "
                          "PLAIN.pem`) or make a pair with `modelkeep keygen`") from None
    except (ValueError, UnsupportedAlgorithm):
        other = b"PUBLIC KEY" in data if private else b"PRIVATE KEY" in data
        swap = f"; it holds a {'public' if private else 'private'} key: give the {what} one" if other else ""
        raise ConfigError(f"{path} is not a PEM {what} key{swap} (`modelkeep keygen` writes both)") from None
    public = key.public_key() if private else key
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in SUPPORTED_CURVES:
        raise ConfigError(f"the {what} key {path} is not an elliptic-curve key on {', '.join(SUPPORTED_CURVES)}; "
                          "model-signing needs one: make a pair with `modelkeep keygen`")
    return key


def _public_pem(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _fingerprint(public: Any) -> str:
    """SHA-256 of the public key's PEM (SubjectPublicKeyInfo): the hint model-signing records in a bundle."""
    return hashlib.sha256(_public_pem(public)).hexdigest()


#: ``verify_file``'s public name: ``modelkeep.verify_file`` is already the check of a file's integrity hashes.
verify_signature = verify_file

__all__ = ["MAX_KEY_BYTES", "MAX_SIGNATURE_BYTES", "SIGNATURE_SUFFIX", "generate_keys", "sign_file",
           "signature_path", "verify_file", "verify_signature"]

"""``modelkeep keygen | sign | verify``: OpenSSF model-signing signatures of model files, with a key pair, offline.

``keygen PRIVATE.pem PUBLIC.pem`` makes an EC P-256 pair; ``sign FILE --key PRIVATE.pem`` writes ``FILE.sig``;
``verify FILE --key PUBLIC.pem`` checks it and prints one line. All the work is
``modelkeep.artifact.signing``; a refusal (unsigned, tampered, another key) is one line and status 2.
"""
from __future__ import annotations

import argparse

from ._output import print_json, printable


def add_parser(commands: argparse._SubParsersAction) -> None:
    keygen = commands.add_parser("keygen", help="make an EC P-256 key pair for signing models (PEM files; the "
                                                "private one mode 0600, never replaced)")
    keygen.add_argument("private", metavar="PRIVATE.pem", help="where to write the private key (keep it secret)")
    keygen.add_argument("public", metavar="PUBLIC.pem", help="where to write the public key (give it to those "
                                                             "who verify)")
    keygen.set_defaults(handler=_keygen)
    sign = commands.add_parser("sign", help="sign a model file with a private key (writes FILE.sig, an OpenSSF "
                                            "model-signing bundle)")
    sign.add_argument("file", metavar="FILE", help="the file to sign (any file; usually a modelkeep model)")
    sign.add_argument("--key", metavar="PRIVATE.pem", required=True, help="the private key (`modelkeep keygen`)")
    sign.add_argument("--signature", metavar="OUT", help="where to write the signature (default: FILE.sig)")
    sign.set_defaults(handler=_sign)
    verify = commands.add_parser("verify", help="check that a file is exactly what the holder of a key signed")
    verify.add_argument("file", metavar="FILE", help="the signed file")
    verify.add_argument("--key", metavar="PUBLIC.pem", required=True, help="the public key of the signer")
    verify.add_argument("--signature", metavar="SIG", help="the signature (default: FILE.sig)")
    verify.add_argument("--json", action="store_true", help="print what was verified as JSON")
    verify.set_defaults(handler=_verify)


def _keygen(args: argparse.Namespace) -> int:
    from ..artifact.signing import generate_keys

    made = generate_keys(args.private, args.public)
    print(printable(f"wrote {made['private_key']} (private: keep it secret) and {made['public_key']} (public); "
                    f"key {made['key_fingerprint']}"))
    return 0


def _sign(args: argparse.Namespace) -> int:
    from ..artifact.signing import sign_file

    written = sign_file(args.file, args.key, signature=args.signature)
    print(printable(f"signed {args.file}: wrote {written}"))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..artifact.signing import verify_file

    report = verify_file(args.file, args.key, signature=args.signature)
    if args.json:
        print_json(report)
    else:
        print(printable(f"verified {report['file']}: key {report['key_fingerprint']}, sha256 {report['sha256']}"))
    return 0

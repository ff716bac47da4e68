"""Options several commands share, each declared once: who may run code, and how refusals name the flags."""
from __future__ import annotations

import argparse
import contextlib
from typing import Iterator

from ..errors import ModelkeepError

TRUST_CODE_HELP = (
    "allow a file saved from a user-defined class (an nn.Module of your own, not a spec) to be rebuilt: the "
    "Python module the file names is IMPORTED, and importing a module runs its code, so pass this only for "
    "files and code you trust (the module must be importable: installed, or on PYTHONPATH)"
)
# The keyword a library error advises, and the flag that says the same on the command line.
TRUST_CODE = ("trust_code=True", "--trust-code")
ALLOW_NONFINITE = ("allow_nonfinite=True", "--allow-nonfinite")

# What predict reads; here (not in _inputs) so that building the parser does not import pathlib or dataclasses.
INPUT_KINDS = "a .npy or .npz array, a CSV table (.csv, .tsv, .csv.gz), an image file or a folder of images"


def add_trust_code(parser: argparse.ArgumentParser) -> None:
    """``--trust-code``: the command-line form of ``load(path, trust_code=True)``, off by default."""
    parser.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)


@contextlib.contextmanager
def naming_flags(*pairs: tuple[str, str]) -> Iterator[None]:
    """A refusal that advises a Python keyword (``trust_code=True``) also names the command's flag for it."""
    try:
        yield
    except ModelkeepError as exc:
        flags = [flag for keyword, flag in pairs if keyword in str(exc)]
        if not flags:
            raise
        try:
            renamed = type(exc)(f"{exc} (on the command line: {', '.join(flags)})")
        except TypeError:  # an error class with arguments of its own: keep it as it is
            raise exc from None
        raise renamed from None


def add_require_signature(parser: argparse.ArgumentParser) -> None:
    """``--require-signature PUBLIC.pem``: the command-line form of ``load(path, require_signature=...)``."""
    parser.add_argument("--require-signature", metavar="PUBLIC.pem",
                        help="refuse the model unless FILE.sig is a signature of it by this public key's pair")


def load_model(path: str, *, trust_code: bool, require_signature: str | None = None):
    """``modelkeep.load(path, trust_code=..., require_signature=...)``, with a refusal that names ``--trust-code``."""
    from ..artifact import load

    with naming_flags(TRUST_CODE):
        return load(path, trust_code=trust_code, require_signature=require_signature)

"""The ``modelkeep`` command: argument parsing and error reporting, nothing else.

Each sub-command lives in its own module under ``modelkeep.cli`` with an
``add_parser(subparsers)`` function that registers it and sets ``handler``.
Handlers call the same public functions a Python user would; they hold no
logic of their own. Any error becomes one line on stderr (its control characters
escaped) and exit status 2 — a ``ModelkeepError`` in its own words, a refusal of
the system naming the file the user gave, anything unexpected by its type — and
``--debug`` shows the traceback instead. Torch is imported only by
the commands that need it, so ``modelkeep --help`` starts fast.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from typing import Sequence

from ..errors import ModelkeepError
from ._output import printable

# Order is the order of `modelkeep --help`: the life of a model.
COMMAND_MODULES = [
    "quickstart",
    "params",
    "zoo",
    "train",
    "evaluate",
    "cv",
    "finetune",
    "update",
    "sign",
    "registry",
    "inspect",
    "predict",
    "diff",
    "convert",
    "import_model",
    "checkpoints",
    "export_checkpoint",
    "ensemble",
    "export",
    "serve",
]

EXIT_USER_ERROR = 2
EXPECTED_ERRORS = (ModelkeepError, OSError, MemoryError, RecursionError)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="modelkeep",
        description="Declare, train, checkpoint, save, load and share PyTorch models safely.",
    )
    parser.add_argument("--version", action="version", version=f"modelkeep {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"modelkeep.cli.{name}").add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None, *, report_unexpected: bool = False) -> int:
    """Run one command; its status. Errors a user can meet (``ModelkeepError``, what the system refused, memory
    or nesting exhausted) become one line and status 2. Any other exception is a bug, or an input nobody
    checks yet: the console script (``report_unexpected=True``) says so in one line with status 2; a caller
    in Python (a test) gets the exception."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _literal_warnings():
            _fetch_registry_urls(args)
            return int(args.handler(args) or 0)
    except BrokenPipeError:
        return _broken_pipe()
    except KeyboardInterrupt:
        print("modelkeep: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI rule: one line and status 2, never a traceback
        if args.debug or not (report_unexpected or isinstance(exc, EXPECTED_ERRORS)):
            raise
        print(f"modelkeep: error: {printable(' '.join(error_message(exc).split()))}", file=sys.stderr)
        return EXIT_USER_ERROR


#: The arguments that name a model file; a registry URL there (``registry://name@alias``) becomes its cached file.
MODEL_ARGUMENTS = ("file", "base", "source")


def _fetch_registry_urls(args: argparse.Namespace) -> None:
    """Registry URLs work wherever a command takes a model file: each is pulled (verified) into the cache."""
    for key in MODEL_ARGUMENTS:
        value = getattr(args, key, None)
        if isinstance(value, str) and "://" in value:
            from ..registry.refs import is_registry_url, local_path

            if is_registry_url(value):
                setattr(args, key, str(local_path(value)))


def error_message(exc: BaseException) -> str:
    """What went wrong, for a person: a ``ModelkeepError`` says it itself; the rest is described here."""
    if isinstance(exc, ModelkeepError):
        return str(exc)
    if isinstance(exc, OSError):
        return _system_error(exc)
    if isinstance(exc, MemoryError):
        return (f"out of memory ({exc or 'an allocation failed'}): the input or the model is larger than this "
                "machine can hold; use a smaller input or batch")
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to read (maximum recursion depth exceeded); flatten it"
    return (f"unexpected {type(exc).__name__}: {exc}. modelkeep did not check this input as it should; rerun "
            "with --debug for the traceback and report it")


def _system_error(exc: OSError) -> str:
    """A refusal of the system (permission denied, a folder given as a file, a full disk), naming the file
    the user asked for rather than the temporary name an atomic write was using."""
    import errno

    from ..io.atomic import TEMP_MARKER

    hints = {errno.EACCES: "check the folder's permissions or choose another place",
             errno.EPERM: "check the folder's permissions or choose another place",
             errno.EROFS: "the file system is read-only; choose another place",
             errno.ENOSPC: "the disk is full; free some space or choose another place",
             errno.EISDIR: "it is a folder; give a file name",
             errno.ENOTDIR: "a part of the path is a file, not a folder"}
    reason = exc.strerror or str(exc)
    hint = f"; {hints[exc.errno]}" if exc.errno in hints else ""
    if exc.filename is None:
        return reason + hint
    path = str(exc.filename)
    writing = TEMP_MARKER in path
    if writing:  # ".model.safetensors.modelkeep-tmp-123-ab12" is how model.safetensors is written
        folder, _, name = path.rpartition("/")
        path = f"{folder}/" * bool(folder) + name.removeprefix(".").split(TEMP_MARKER)[0]
    return f"{'cannot write' if writing else 'cannot use'} {path!r}: {reason}{hint}"


@contextlib.contextmanager
def _literal_warnings():
    """Warnings quote files too: print them with their control characters escaped."""
    format_warning = warnings.formatwarning
    warnings.formatwarning = lambda *parts, **options: printable(format_warning(*parts, **options),
                                                                   keep_newlines=True)
    try:
        yield
    finally:
        warnings.formatwarning = format_warning


def _broken_pipe() -> int:
    """The reader (`| head`) went away: stop quietly, as Unix tools do."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


def run() -> None:
    """Console-script entry point (and ``python -m modelkeep``): never a traceback without ``--debug``."""
    sys.exit(main(report_unexpected=True))

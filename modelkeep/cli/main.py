"""The ``modelkeep`` command: argument parsing and error reporting, nothing else.

Each sub-command lives in its own module under ``modelkeep.cli`` with an
``add_parser(subparsers)`` function that registers it and sets ``handler``.
Handlers call the same public functions a Python user would; they hold no
logic of their own. Any ``ModelkeepError`` becomes one line on stderr and exit
status 2 (``--debug`` shows the traceback instead). Torch is imported only by
the commands that need it, so ``modelkeep --help`` starts fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ..errors import ModelkeepError

# Order is the order of `modelkeep --help`: the life of a model.
COMMAND_MODULES = [
    "quickstart",
    "params",
    "zoo",
    "train",
    "evaluate",
    "cv",
    "inspect",
    "predict",
    "diff",
    "convert",
    "checkpoints",
    "export_checkpoint",
]

EXIT_USER_ERROR = 2


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:
        return _broken_pipe()
    except (ModelkeepError, OSError) as exc:
        # OSError covers what the system refused: permission denied, a folder given as a file, a full disk.
        if args.debug:
            raise
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"modelkeep: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("modelkeep: interrupted", file=sys.stderr)
        return 130


def _broken_pipe() -> int:
    """The reader (`| head`) went away: stop quietly, as Unix tools do."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())

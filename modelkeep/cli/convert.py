"""``modelkeep convert IN OUT``: a model file to its human-readable JSON form, and back.

The direction follows the names: ``FILE model.json`` writes JSON, ``model.json
FILE`` writes a model file. All the work is ``modelkeep.artifact.json_form``.
"""
from __future__ import annotations

import argparse

from ..errors import ConfigError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("convert", help="convert a model file to its JSON form (layers, weights) and back")
    parser.add_argument("source", help="a model file, or a .json model")
    parser.add_argument("destination", help="model.json to export, or a model file to import into")
    parser.add_argument("--force", action="store_true", help="convert even a large model (the JSON may be huge)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..artifact.json_form import export_json, import_json

    source_is_json = args.source.lower().endswith(".json")
    destination_is_json = args.destination.lower().endswith(".json")
    if source_is_json == destination_is_json:
        raise ConfigError(
            f"convert needs exactly one .json side: got {args.source!r} -> {args.destination!r}. Use "
            "`modelkeep convert model.safetensors model.json` or `modelkeep convert model.json model.safetensors`"
        )
    if destination_is_json:
        written = export_json(args.source, args.destination, force=args.force)
    else:
        written = import_json(args.source, args.destination, force=args.force)
    print(f"wrote {written}")
    return 0

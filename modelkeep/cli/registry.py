"""``modelkeep push | pull | ls | show | alias | rm | gc``: the registry from the command line.

Every command is one call into ``modelkeep.registry``; ``--registry DIR`` (else
``MODELKEEP_REGISTRY``, else ``~/.modelkeep/registry``) picks the registry.
"""
from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

from ._output import console, plain_printer, print_json, printable, table

_REF_HELP = "NAME (latest), NAME:VERSION (id or a prefix of 4+ hex characters) or NAME@ALIAS"


def add_parser(commands: argparse._SubParsersAction) -> None:
    def command(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--registry", metavar="DIR", help="registry folder (default: $MODELKEEP_REGISTRY or "
                                                               "~/.modelkeep/registry)")
        parser.set_defaults(handler=handler)
        return parser

    push = command("push", "publish a model file as a new version in the registry", _push)
    push.add_argument("file")
    push.add_argument("name")
    push.add_argument("--alias", help="point this alias (e.g. production) at the new version")
    push.add_argument("--card", metavar="CARD.md", help="a Markdown model card stored with the version")
    push.add_argument("--parent", metavar="REF", help="the version this one derives from (lineage)")
    pull = command("pull", "rebuild a version's file from the registry, verifying every digest", _pull)
    pull.add_argument("ref", help=_REF_HELP)
    pull.add_argument("out", nargs="?", default=".", help="file or folder to write (default: here)")
    ls = command("ls", "list versions; QUERY words match names/aliases, or filter metrics (accuracy>0.9)", _ls)
    ls.add_argument("query", nargs="*")
    ls.add_argument("--json", action="store_true", help="print JSON")
    show = command("show", "one version: id, size, aliases, metrics, hyperparameters, parent, card", _show)
    show.add_argument("ref", help=_REF_HELP)
    show.add_argument("--json", action="store_true", help="print JSON")
    alias = command("alias", "point NAME@ALIAS at a version (moving it)", _alias)
    alias.add_argument("name")
    alias.add_argument("version")
    alias.add_argument("alias")
    rm = command("rm", "remove a version (NAME:VERSION), every version of NAME, or an alias (NAME@ALIAS)", _rm)
    rm.add_argument("ref", help=_REF_HELP)
    gc = command("gc", "delete blobs no version references (older than the grace period)", _gc)
    gc.add_argument("--grace-seconds", type=float, default=None, help="keep blobs touched more recently "
                                                                      "(default 3600: pushes in flight are safe)")


def _registry(args: argparse.Namespace):
    from ..registry import open_registry

    return open_registry(args.registry)


def _push(args: argparse.Namespace) -> int:
    card = Path(args.card).read_text(encoding="utf-8") if args.card else None
    version = _registry(args).push(args.file, args.name, alias=args.alias, card=card, parent=args.parent)
    plain_printer(console())(f"pushed {version.name}:{version.id} ({version.size:,} bytes)"
                             + (f" @{args.alias}" if args.alias else ""))
    return 0


def _pull(args: argparse.Namespace) -> int:
    path = _registry(args).pull(args.ref, args.out)
    plain_printer(console())(f"pulled {args.ref} -> {path} (every digest verified)")
    return 0


def _document(version) -> dict:
    return {"name": version.name, "id": version.id, "size": version.size, "aliases": list(version.aliases),
            "created": _dt.datetime.fromtimestamp(version.created, _dt.timezone.utc).isoformat(timespec="seconds"),
            "metrics": version.metrics, "hyperparameters": version.hyperparameters, "parent": version.parent,
            "lineage": version.lineage}


def _ls(args: argparse.Namespace) -> int:
    versions = _registry(args).list(" ".join(args.query))
    if args.json:
        print_json([_document(v) for v in versions])
        return 0
    rows = [[printable(v.name), v.id[:12], f"{v.size:,}", printable(", ".join(v.aliases)),
             printable(", ".join(f"{k}={val}" for k, val in sorted(v.metrics.items()))[:60])] for v in versions]
    console().print(table(None, ["name", "version", "bytes", "aliases", "metrics"], rows, right={"bytes"}))
    return 0


def _show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    document = _document(registry.show(args.ref))
    document["card"] = registry.card(args.ref)
    if args.json:
        print_json(document)
        return 0
    say = plain_printer(console())
    for key, value in document.items():
        if key != "card" and value not in (None, {}, []):
            say(f"{key}: {printable(str(value))}")
    if document["card"]:
        say("card:\n" + document["card"])
    return 0


def _alias(args: argparse.Namespace) -> int:
    version = _registry(args).set_alias(args.name, args.version, args.alias)
    plain_printer(console())(f"{version.name}@{args.alias} -> {version.id}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    removed = _registry(args).remove(args.ref)
    plain_printer(console())(f"removed {args.ref}" + (f" ({len(removed)} version(s); `modelkeep gc` frees their "
                                                       "blobs)" if removed else ""))
    return 0


def _gc(args: argparse.Namespace) -> int:
    registry = _registry(args)
    removed = registry.gc() if args.grace_seconds is None else registry.gc(grace_seconds=args.grace_seconds)
    plain_printer(console())(f"removed {len(removed)} unreferenced blob(s)")
    return 0

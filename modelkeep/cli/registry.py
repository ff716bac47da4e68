"""``modelkeep push | pull | ls | show | lineage | alias | rm | gc | copy``: the registry from the command line.

Every command is one call into ``modelkeep.registry``; ``--registry`` (a folder,
``s3://bucket/prefix`` or ``oci://host/namespace``; else ``MODELKEEP_REGISTRY``,
else ``~/.modelkeep/registry``) picks the registry. Transfers show a progress
bar in a terminal.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
from pathlib import Path
from typing import Callable, Iterator

from ._output import console, plain_printer, print_json, printable, table

_REF_HELP = "NAME (latest), NAME:VERSION (id or a prefix of 4+ hex characters) or NAME@ALIAS"


def add_parser(commands: argparse._SubParsersAction) -> None:
    def command(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--registry", metavar="LOCATION", help="a folder, s3://bucket/prefix or "
                            "oci://host/namespace (default: $MODELKEEP_REGISTRY or ~/.modelkeep/registry)")
        parser.set_defaults(handler=handler)
        return parser

    push = command("push", "publish a model file as a new version in the registry", _push)
    push.add_argument("file")
    push.add_argument("name")
    push.add_argument("--alias", help="point this alias (e.g. production) at the new version")
    push.add_argument("--card", metavar="CARD.md", help="a Markdown model card stored with the version")
    push.add_argument("--parent", metavar="REF", help="the version this one derives from (default: the version "
                                                      "whose content the file's lineage names)")
    push.add_argument("--sign", metavar="PRIVATE.pem", help="sign the file with this key first (FILE.sig, "
                                                             "pushed with it; FILE.sig is pushed anyway if present)")
    pull = command("pull", "rebuild a version's file from the registry, verifying every digest", _pull)
    pull.add_argument("ref", help=_REF_HELP)
    pull.add_argument("out", nargs="?", default=".", help="file or folder to write (default: here)")
    pull.add_argument("--require-signature", metavar="PUBLIC.pem",
                      help="refuse the version unless it is signed by this key's pair (nothing is written)")
    ls = command("ls", "list versions; QUERY words match names/aliases, or filter metrics (accuracy>0.9)", _ls)
    ls.add_argument("query", nargs="*")
    ls.add_argument("--json", action="store_true", help="print JSON")
    show = command("show", "one version: id, size, aliases, metrics, hyperparameters, parent, card", _show)
    show.add_argument("ref", help=_REF_HELP)
    show.add_argument("--json", action="store_true", help="print JSON")
    lineage = command("lineage", "the family tree of NAME's versions: what each derives from, what derives from it",
                      _lineage)
    lineage.add_argument("name")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    alias = command("alias", "point NAME@ALIAS at a version (moving it)", _alias)
    alias.add_argument("name")
    alias.add_argument("version")
    alias.add_argument("alias")
    rm = command("rm", "remove a version (NAME:VERSION), every version of NAME, or an alias (NAME@ALIAS)", _rm)
    rm.add_argument("ref", help=_REF_HELP)
    gc = command("gc", "delete blobs no version references (older than the grace period)", _gc)
    gc.add_argument("--grace-seconds", type=float, default=None, help="keep blobs touched more recently "
                                                                      "(default 3600: pushes in flight are safe)")
    copy = commands.add_parser("copy", help="copy every version of NAME (aliases, cards, signatures) between "
                                            "registries; blobs the destination holds are not sent")
    copy.add_argument("source", metavar="SRC_REGISTRY")
    copy.add_argument("destination", metavar="DST_REGISTRY")
    copy.add_argument("name")
    copy.set_defaults(handler=_copy)


@contextlib.contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr while a transfer runs, in a terminal; nothing otherwise."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(printable(label), total=total)
        yield lambda nbytes: bar.advance(task, nbytes)


def _registry(args: argparse.Namespace):
    from ..registry import open_registry

    return open_registry(args.registry)


def _push(args: argparse.Namespace) -> int:
    from ..registry.ops import read_card_file

    card = read_card_file(args.card) if args.card else None
    if args.sign:
        from ..artifact.signing import sign_file

        sign_file(args.file, args.sign)
    with _progress(f"push {args.name}", Path(args.file).stat().st_size) as progress:
        version = _registry(args).push(args.file, args.name, alias=args.alias, card=card, parent=args.parent,
                                       progress=progress)
    plain_printer(console())(f"pushed {version.name}:{version.id} ({version.size:,} bytes)"
                             + (f" @{args.alias}" if args.alias else ""))
    return 0


def _pull(args: argparse.Namespace) -> int:
    registry = _registry(args)
    with _progress(f"pull {args.ref}", registry.show(args.ref).size) as progress:
        path = registry.pull(args.ref, args.out, require_signature=args.require_signature, progress=progress)
    plain_printer(console())(f"pulled {args.ref} -> {path} (every digest verified"
                             + (", signature verified)" if args.require_signature else ")"))
    return 0


def _lineage(args: argparse.Namespace) -> int:
    trees = _registry(args).lineage(args.name)
    if args.json:
        def node(n):
            return {**_document(n.version), "children": [node(c) for c in n.children]}

        print_json([node(t) for t in trees])
        return 0
    from rich.tree import Tree

    def label(version) -> str:
        aliases = "".join(f" @{a}" for a in version.aliases)
        metrics = ", ".join(f"{k}={v}" for k, v in sorted(version.metrics.items()))
        return printable(f"{version.name}:{version.id[:12]}{aliases}" + (f"  {metrics}" if metrics else ""))

    def grow(tree, node) -> None:
        for child in node.children:
            grow(tree.add(label(child.version), highlight=False), child)

    for root in trees:
        tree = Tree(label(root.version), highlight=False)
        grow(tree, root)
        console().print(tree)
    return 0


def _copy(args: argparse.Namespace) -> int:
    from ..registry import copy

    report = copy(args.source, args.destination, args.name)
    plain_printer(console())(f"copied {len(report.versions)} version(s) of {args.name}: {report.blobs_sent} blob(s) "
                             f"sent ({report.bytes_sent:,} bytes), {report.blobs_skipped} already there")
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

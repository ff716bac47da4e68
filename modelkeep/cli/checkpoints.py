"""``modelkeep checkpoints DIR``: the checkpoints of a run, with position, metrics, size and integrity."""
from __future__ import annotations

import argparse

from ._output import console, print_json, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("checkpoints", help="list a run's checkpoints and check their integrity")
    parser.add_argument("directory", metavar="DIR",
                        help="the run's checkpoint folder, or an fsspec URL such as s3://bucket/run/checkpoints")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="read headers only; do not hash every tensor")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..checkpoint.export import list_checkpoints

    infos = list_checkpoints(args.directory, verify=args.verify)
    if args.json:
        print_json([info.to_dict() for info in infos])
        return 0
    out = console()
    if not infos:
        out.print(f"no checkpoints in {args.directory}")
        return 0
    status = {True: "verified", None: "not checked", False: "DAMAGED"}
    rows = []
    for info in infos:
        metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.metrics.items())
        rows.append([info.name, info.step, info.epoch, info.batch, metrics, f"{info.size:,}",
                     status[info.verified] + (f": {info.error}" if info.error else "")])
    out.print(table(args.directory, ["checkpoint", "step", "epoch", "batch", "metrics", "bytes", "status"], rows,
                    right={"step", "epoch", "batch", "bytes"}))
    return 0

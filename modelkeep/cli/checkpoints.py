"""``modelkeep checkpoints DIR``: the checkpoints of a run, with position, metrics, size and integrity.

Also ``inspect_checkpoint``, what ``modelkeep inspect`` prints for a checkpoint file.
"""
from __future__ import annotations

import argparse

from ._output import console, plain_printer, print_json, printable_document, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("checkpoints", help="list a run's checkpoints and check their integrity")
    parser.add_argument("directory", metavar="DIR",
                        help="the run folder or its checkpoints/ folder, or an fsspec URL such as s3://bucket/run")
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


def inspect_checkpoint(path: str, *, verify: bool = False, as_json: bool = False) -> bool:
    """``modelkeep inspect`` of a checkpoint file: print what it holds and return True; False when it is not one."""
    from ..checkpoint.reading import checkpoint_description

    described = checkpoint_description(path, verify=verify)
    if described is None:
        return False
    if as_json:
        print_json(described)
        return True
    described = printable_document(described)  # metric names and paths come from the file: escape control codes
    say = plain_printer(console())  # text from the file is never markup
    say(f"checkpoint   {described['path']}")
    say(f"position     step {described['step']}, epoch {described['epoch']}, batch {described['batch']}"
        + (f" (written {described['created']})" if described.get("created") else ""))
    if described["metrics"]:
        say("metrics      " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in described["metrics"].items()))
    if described["monitor"]:
        say(f"monitor      {described['monitor']['metric']} ({described['monitor']['mode']})")
    holds = ", ".join(f"{name} ({part['tensors']} tensors, {part['bytes']:,} bytes)"
                      for name, part in described["parts"].items())
    say(f"holds        {holds or 'no tensors'}")
    say("export       " + ("a release model file can be made: modelkeep export-checkpoint DIR OUT --step "
                           f"{described['step']}" if described["exportable"]
                           else "no model manifest inside, so no release model file can be made from it"))
    if described.get("misnamed"):
        say(f"warning      {described['misnamed']}")
    status = {True: "OK: every tensor matches its hash", None: "header read; tensors not checked (use --verify)",
              False: f"DAMAGED: {described['error']}"}
    say(f"integrity    {status[described['verified']]}")
    return True

"""``modelkeep inspect FILE``: what a model file holds, read from its header alone (no torch).

All the work is ``modelkeep.artifact.inspection.describe``; this module prints it.
"""
from __future__ import annotations

import argparse
from typing import Any

from ._output import console, plain_printer, print_json, printable_document, table


_CHECKPOINT_KEY = "modelkeep.checkpoint"  # checkpoint.reading.CHECKPOINT_KEY, named without importing torch


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("inspect", help="show a model file's layers, parameters and metadata")
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--verify", action="store_true",
                        help="also check the hash of every tensor (reads all the data; still no torch)")
    parser.set_defaults(handler=handle)


def describe(path: str, *, verify: bool = False) -> dict[str, Any]:
    """The JSON description ``inspect --json`` prints."""
    from ..artifact.inspection import describe as describe_file

    return describe_file(path, verify=verify)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _pairs(record: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in record.items())


def _trained(value: Any) -> str:
    return "" if value is None else ("yes" if value else "frozen")


def _setting(value: Any) -> str:
    """A transfer setting in a line: ``[0, conv*]``, ``(alpha=0.01, beta=0)``."""
    if isinstance(value, dict):
        return "(" + _pairs(value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_setting(v) for v in value) + "]"
    return str(value)


def _settings_line(transfer: dict[str, Any]) -> str:
    """The transfer settings that differ from plain full fine-tuning, in one line."""
    settings = {k: v for k, v in transfer.items() if v not in (None, [], {}, 0, "train") and k != "trained_layers"}
    return ", ".join(f"{k}={_setting(v)}" for k, v in settings.items()) or "full fine-tuning, default settings"


def _rate(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _architecture_line(summary: dict[str, Any]) -> str:
    """One line for any architecture codec's summary: its name and size, a class reference, and its note."""
    kind = summary.get("type")
    if "class" in summary:
        words = f"user class {summary['class']}({_pairs(summary.get('init') or {})}) [not imported]"
    else:
        words = f"{kind} {summary['name']!r}" if summary.get("name") is not None else str(kind)
    if summary.get("layers") is not None:
        words += f", {summary['layers']} layers"
    return words + (f" ({summary['note']})" if summary.get("note") else "")


def handle(args: argparse.Namespace) -> int:
    from ..artifact.format import read_header

    # A checkpoint is described as one; only then is the checkpoint reader (which needs torch) imported.
    if _CHECKPOINT_KEY in read_header(args.file).metadata:
        from .checkpoints import inspect_checkpoint

        if inspect_checkpoint(args.file, verify=args.verify, as_json=args.json):
            return 0
    info = describe(args.file, verify=args.verify)
    if args.json:
        print_json(info)
        return 0
    out = console()
    say = plain_printer(out)  # text from the file is never markup
    info = printable_document(info)  # nor escape codes, nor a line of its own (cli/_output.py)

    arch = info["architecture"]
    rows = [[r["name"], r["kind"], "x".join(map(str, r["output_shape"] or [])),
             f"{r['parameters']:,}"] for r in info["layers"]]
    columns = ["layer", "kind", "output shape", "parameters"]
    if info.get("transfer") is not None:  # a fine-tuned file: which layers trained, at which rate
        columns += ["trained", "learning rate"]
        for row, layer in zip(rows, info["layers"]):
            row += [_trained(layer.get("trained")), _rate(layer.get("learning_rate"))]
    out.print(table(info["path"], columns, rows, right={"parameters", "learning rate"}))
    say(f"architecture {_architecture_line(arch)}")
    trained = sum(r["parameters"] for r in info["layers"] if r.get("trained"))
    say(f"parameters   {info['total_parameters']:,} ({info['trainable_parameters']:,} trainable"
        + (f", {trained:,} trained in the fine-tune)" if info.get("transfer") is not None else ")"))
    sizes = info["sizes"]
    say(f"file         {_bytes(info['file_bytes'])}: header {_bytes(sizes['header_bytes'])}, weights "
              f"{_bytes(sizes['weight_bytes'])}"
              + (f", optimizer {_bytes(sizes['optimizer_bytes'])}" if sizes["optimizer_bytes"] else "")
              + f"; {info['tensors']} tensors, format v{info['format_version']}")
    say(f"task         {info['task']}" + (f", labels {', '.join(info['labels'])}" if info["labels"] else ""))
    signature = info["signature"] or {}
    for direction in ("inputs", "outputs"):
        for entry in signature.get(direction) or []:
            shape = ", ".join("batch" if d is None else str(d) for d in entry.get("shape", []))
            say(f"{direction[:-1]:<12} {entry.get('name')}: {entry.get('dtype')} ({shape})")
    if info["metrics"]:
        say("metrics      " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in info["metrics"].items()))
    if info["epochs_trained"]:
        say(f"history      {info['epochs_trained']} epochs ({', '.join(info['history'])})")
    if info["preprocessing"]:
        say(f"preprocess   {info['preprocessing']}")
    if info.get("postprocessing"):
        say(f"postprocess  {_pairs(info['postprocessing'])}")
    if info["optimizer"]:
        say(f"optimizer    {info['optimizer']['class']} state saved")
    provenance = {k: v for k, v in (info["provenance"] or {}).items()
                  if k in ("modelkeep_version", "torch_version", "created", "git_commit", "data_fingerprint")}
    if provenance:
        say("provenance   " + _pairs(provenance))
    if info["card"]:
        say("card         " + _pairs(info["card"]))
    lineage = info["lineage"] or {}
    if lineage.get("parent"):
        say(f"lineage      {lineage.get('relation', 'child')} of {lineage['parent'].get('content_hash')}"
                  + (f" ({lineage['parent']['source']})" if lineage["parent"].get("source") else ""))
    if info.get("transfer") is not None:
        say("fine-tune    " + _settings_line(info["transfer"]))
    say(f"content hash {info['content_hash']}")
    integrity = info["integrity"]
    if integrity["verified"]:
        say(f"integrity    OK: {integrity['tensors']} tensors ({_bytes(integrity['tensor_bytes'])}) and "
                  f"{integrity['metadata_values']} metadata values match their hashes")
    else:
        say("integrity    metadata and layout hashes OK; tensors not read (use --verify)")
    return 0

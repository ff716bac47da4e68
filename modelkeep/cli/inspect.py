"""``modelkeep inspect FILE``: what a model file holds, read from its header alone (no torch)."""
from __future__ import annotations

import argparse
from typing import Any

from ._output import console, print_json, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("inspect", help="show a model file's layers, parameters and metadata")
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=handle)


def describe(path: str) -> dict[str, Any]:
    """The JSON description ``inspect --json`` prints."""
    from ..artifact.manifest import read_manifest
    from ..spec.model import ModelSpec
    from ..spec.params import count_parameters

    header, manifest = read_manifest(path)
    report = count_parameters(ModelSpec.from_dict(manifest.spec_dict()))
    history = manifest.history or {}
    return {
        "path": str(header.path),
        "format_version": manifest.format_version,
        "file_bytes": header.file_size,
        "tensor_bytes": header.file_size - header.data_start,
        "tensors": len(header.tensors),
        "total_parameters": report.total,
        "trainable_parameters": report.trainable,
        "layers": [row.to_dict() for row in report.layers],
        "task": manifest.task,
        "labels": manifest.labels,
        "signature": manifest.signature,
        "metrics": manifest.metrics,
        "hyperparameters": manifest.hyperparameters,
        "preprocessing": (manifest.preprocessing or {}).get("type"),
        "epochs_trained": len(history.get("epoch", [])),
        "history": history,
        "provenance": manifest.provenance,
        "card": manifest.card,
        "lineage": manifest.lineage,
    }


def handle(args: argparse.Namespace) -> int:
    info = describe(args.file)
    if args.json:
        print_json(info)
        return 0
    out = console()
    rows = [[r["name"], r["kind"], "x".join(map(str, r["output_shape"] or [])), f"{r['parameters']:,}"]
            for r in info["layers"]]
    out.print(table(info["path"], ["layer", "kind", "output shape", "parameters"], rows, right={"parameters"}))
    out.print(f"parameters  {info['total_parameters']:,} ({info['trainable_parameters']:,} trainable)")
    out.print(f"file        {info['file_bytes']:,} bytes, {info['tensors']} tensors, format v{info['format_version']}")
    out.print(f"task        {info['task']}" + (f", labels {', '.join(info['labels'])}" if info["labels"] else ""))
    if info["metrics"]:
        out.print("metrics     " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in info["metrics"].items()))
    if info["epochs_trained"]:
        out.print(f"history     {info['epochs_trained']} epochs ({', '.join(info['history'])})")
    if info["preprocessing"]:
        out.print(f"preprocess  {info['preprocessing']}")
    for key in ("provenance", "card"):
        if info[key]:
            out.print(f"{key:<11} " + ", ".join(f"{k}={v}" for k, v in info[key].items()))
    return 0

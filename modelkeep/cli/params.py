"""``modelkeep params NAME_OR_SPEC_FILE``: the per-layer parameter table of a zoo model, a spec file or a model file.

A spec's ``trainable: false`` layers show as frozen; for a fine-tuned model file the table also shows
which layers trained and each one's learning rate, from the file's lineage (``artifact.inspection``).
"""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import SpecError
from ._output import console, literal, print_json


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "params", help="count the parameters of a zoo model or a spec, layer by layer",
        description="Count parameters per layer with the formula behind each number, without allocating weights.",
    )
    parser.add_argument("spec", metavar="NAME_OR_SPEC_FILE", help="a zoo model name (see `modelkeep zoo list`), "
                                                                   "a spec file (.json, .yaml) or a model file "
                                                                   "(.safetensors)")
    add_spec_options(parser)
    parser.add_argument("--dtype", default="float32", help="dtype for the memory column (default float32)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=handle)


def add_spec_options(parser: argparse.ArgumentParser) -> None:
    """``--set`` and ``--input-shape``, shared by ``params`` and ``zoo show``."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a zoo option (num_classes=10) or, for a spec file, LAYER.FIELD=VALUE; repeatable")
    parser.add_argument("--input-shape", nargs="+", metavar="DIM",
                        help="per-sample input shape, e.g. 3 64 64 or 3,64,64 (no batch axis)")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["num_classes=10", "hidden=[64,32]"]`` -> ``{"num_classes": 10, "hidden": [64, 32]}`` (values as YAML,
    read by the one ``--set`` parser every command shares; dotted keys such as ``fc.units`` are kept whole)."""
    from .._overrides import parse_overrides as parse

    return parse(items, error=SpecError)


def parse_shape(parts: list[str] | None) -> tuple[int, ...] | None:
    if not parts:
        return None
    pieces = [p for part in parts for p in part.replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in pieces)
    except ValueError:
        raise SpecError(f"--input-shape takes whole numbers such as 3 224 224, got {' '.join(parts)!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise SpecError(f"--input-shape needs positive sizes, got {' '.join(parts)!r}")
    return shape


def resolve(args: argparse.Namespace):
    from ..zoo import resolve_spec

    return resolve_spec(args.spec, overrides=parse_overrides(args.overrides), input_shape=parse_shape(args.input_shape))


def handle(args: argparse.Namespace) -> int:
    from ..spec import count_parameters

    if args.spec.endswith(".safetensors"):
        spec, rates = _model_file(args.spec)
    else:
        spec, rates = resolve(args), None
    report = count_parameters(spec, dtype=args.dtype)
    if rates is not None:
        report = _with_training(report, rates)
    if args.json:
        document = {"name": spec.name, **report.to_dict()}
        for row in document["layers"] if rates is not None else ():
            row["learning_rate"] = rates.get(row["name"], {}).get("learning_rate")
        print_json(document)
        return 0
    print_report(report, title=spec.name, rates=rates)
    return 0


def _model_file(path: str):
    """A model file's spec, and per layer whether it trained and at which rate (a fine-tuned file's lineage;
    else every layer at the run's learning rate, when the file records one)."""
    from ..artifact.inspection import transfer_view
    from ..artifact.manifest import read_manifest
    from ..artifact.spec_codec import spec_of
    from ..spec import count_parameters

    _, manifest = read_manifest(path, verify=True)
    if (manifest.architecture or {}).get("type") != "spec":
        raise SpecError(f"{path} holds a {manifest.architecture.get('type')} architecture, not a spec; "
                        "`modelkeep inspect` describes it")
    spec = spec_of(manifest.architecture, path)
    layers = [(row.name, row.parameters) for row in count_parameters(spec).layers]
    view = transfer_view(manifest.lineage, manifest.hyperparameters, layers)
    if view is None:
        rate = (manifest.hyperparameters or {}).get("learning_rate")
        view = {name: {"trained": None, "learning_rate": rate if count else None} for name, count in layers}
    return spec, view


def _with_training(report, rates: dict[str, dict[str, Any]]):
    """The report with the layers a fine-tune kept frozen counted as frozen."""
    from dataclasses import replace

    rows = tuple(replace(row, trainable=0) if rates.get(row.name, {}).get("trained") is False else row
                 for row in report.layers)
    return replace(report, layers=rows)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


def print_report(report, title: str | None = None, rates: dict[str, dict[str, Any]] | None = None) -> None:
    rows = []
    notes: list[str] = []
    for r in report.layers:
        formula = r.formula
        if r.note:
            if r.note not in notes:
                notes.append(r.note)
            formula += f" [{notes.index(r.note) + 1}]"
        state = "" if not r.parameters else ("frozen" if r.frozen else "yes")
        rate = (rates or {}).get(r.name, {}).get("learning_rate") if r.parameters and not r.frozen else None
        rows.append([r.name, r.kind, "x".join(map(str, r.output_shape)) if r.output_shape else "",
                     f"{r.parameters:,}", state, f"{rate:.3g}" if isinstance(rate, (int, float)) else "",
                     f"{r.buffers:,}" if r.buffers else "", formula])
    from rich.table import Table

    out = console()
    if not out.is_terminal:
        out.width = max(out.width, 160)  # piped output: keep formulas on one line
    grid = Table(title=None if title is None else literal(title), title_justify="left")  # a spec file's name
    for column in ("layer", "kind", "output shape", "parameters", "trainable", "learning rate", "buffers", "formula"):
        numeric = column in ("parameters", "buffers", "learning rate")
        grid.add_column(column, justify="right" if numeric else "left", no_wrap=column != "formula",
                        overflow="fold")
    if rates is None:  # a spec or zoo model: no learning rates to show
        rows = [row[:5] + row[6:] for row in rows]
        grid.columns.pop(5)
    for row in rows:
        grid.add_row(*(literal(cell) for cell in row))
    out.print(grid)
    out.print(
        f"total {report.total:,} parameters ({report.trainable:,} trainable, {report.non_trainable:,} frozen), "
        f"{_human_bytes(report.bytes)} as {report.dtype}"
    )
    if report.buffers:
        out.print(f"plus {report.buffers:,} buffer values (batch-norm running statistics, not trained), "
                  f"{_human_bytes(report.buffer_bytes)}")
    for number, note in enumerate(notes, start=1):
        out.print(f"[{number}] {note}")

"""``modelkeep evaluate FILE --data NAME_OR_PATH [--split test] [--json]``: metrics of a saved model on data."""
from __future__ import annotations

import argparse

from ._options import TRUST_CODE, add_trust_code, naming_flags
from ._output import console, print_json, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="loss and metrics of a saved model on a dataset or file")
    parser.add_argument("file", help="a model file (.safetensors)")
    parser.add_argument("--data", required=True, help="a dataset name (digits, ...) or a CSV/.npy/.npz file or image folder")
    parser.add_argument("--split", choices=["test", "validation", "train", "all"], default="test",
                        help="which part, split as the model's training run split it (default: test); 'all' for every sample")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_trust_code(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..train.evaluation import evaluate_file

    with naming_flags(TRUST_CODE):
        report = evaluate_file(args.file, args.data, split=args.split, trust_code=args.trust_code)
    if args.json:
        print_json(report)
        return 0
    out = console()
    out.print(f"{report['model']} on {report['data']} ({report['split']}, {report['samples']} samples)")
    rows = [[k, f"{v:.4f}"] for k, v in report["metrics"].items() if isinstance(v, float)]
    out.print(table(None, ["metric", "value"], rows, right={"value"}))
    if "confusion_matrix" in report["metrics"]:
        labels = report.get("labels") or [str(i) for i in range(len(report["metrics"]["confusion_matrix"]))]
        matrix = report["metrics"]["confusion_matrix"]
        out.print(table("confusion matrix (rows: true, columns: predicted)", ["", *labels],
                        [[labels[i], *row] for i, row in enumerate(matrix)], right=set(labels)))
    return 0

"""``modelkeep predict FILE INPUT.npy``: class names and probabilities for each row."""
from __future__ import annotations

import argparse

from ..errors import DataError, ModelNotFoundError
from ._output import console, print_json, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="predict with a saved model on a .npy array")
    parser.add_argument("file", help="a modelkeep model file")
    parser.add_argument("input", help="a .npy array of samples, shaped (N, ...) like the model's input")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--top", type=int, default=3, help="how many classes to list per row")
    parser.set_defaults(handler=handle)


def read_array(path: str):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)  # never unpickle an input file
    except FileNotFoundError:
        raise ModelNotFoundError(f"no such input file: {path!r}") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable .npy array of numbers: {exc}") from None


def handle(args: argparse.Namespace) -> int:
    from ..artifact import load

    model = load(args.file)
    prediction = model.predict(read_array(args.input))
    records = prediction.to_records(top=args.top)
    if args.json:
        print_json(records)
        return 0
    if prediction.probabilities is None:
        rows = [[i, r["value"]] for i, r in enumerate(records)]
        console().print(table(None, ["#", "prediction"], rows))
        return 0
    rows = [[i, r["label"], f"{r['probability']:.4f}",
             ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"])] for i, r in enumerate(records)]
    console().print(table(None, ["#", "class", "probability", f"top {args.top}"], rows, right={"probability"}))
    return 0

"""``modelkeep predict FILE INPUT``: class names and probabilities (or values) for each sample of INPUT.

A model with a sequence output (a class per position, e.g. a language model's next token) gets per
sample the class and its probability at every position (``--json``: ``labels``, ``probabilities`` and
``top`` per position).

INPUT is read by modelkeep.data's bounded readers (see ``_inputs.py``); the work is ``Model.predict``.
"""
from __future__ import annotations

import argparse

from ._options import ALLOW_NONFINITE, INPUT_KINDS, add_require_signature, add_trust_code, load_model, naming_flags
from ._output import console, print_json, printable_document, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="predict with a saved model on a NumPy array, CSV table or images")
    parser.add_argument("file", help="a modelkeep model file")
    parser.add_argument("input", help=f"the samples: {INPUT_KINDS}, shaped like the model's input")
    parser.add_argument("--json", action="store_true", help="print JSON (always valid: NaN becomes null)")
    parser.add_argument("--top", type=_positive, default=3, help="how many classes to list per row")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="predict on samples holding NaN or infinity instead of refusing them (their "
                             "answers are meaningless; JSON shows NaN as null)")
    parser.add_argument("--target", metavar="COLUMN",
                        help="for a CSV holding the target too: its name or index, left out (default: the column "
                             "the model was trained with, else the last)")
    add_trust_code(parser)
    add_require_signature(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    model = load_model(args.file, trust_code=args.trust_code, require_signature=args.require_signature)
    from ._inputs import read_inputs

    inputs = read_inputs(args.input, model._input_shape(), target=args.target, recorded_target=_trained_target(model))
    with naming_flags(ALLOW_NONFINITE):
        prediction = model.predict(inputs.x, allow_nonfinite=args.allow_nonfinite)
    records = prediction.to_records(top=args.top)
    if inputs.files is not None:
        records = [{"file": file, **record} for file, record in zip(inputs.files, records)]
    if args.json:
        print_json(records)
        return 0
    records = printable_document(records)  # labels come from the file: one line each, never escape codes
    first = ["#", "file"] if inputs.files is not None else ["#"]
    lead = [[i, r["file"]] if inputs.files is not None else [i] for i, r in enumerate(records)]
    if prediction.probabilities is None:
        console().print(table(None, [*first, "prediction"], [[*row, r["value"]] for row, r in zip(lead, records)]))
        return 0
    if prediction.sequence:  # a class per position (a language model's next token): one row per sample
        rows = [[*row, " ".join(f"{label} ({p:.3f})" for label, p in zip(r["labels"], r["probabilities"]))]
                for row, r in zip(lead, records)]
        console().print(table(None, [*first, "class (probability) at each position"], rows))
        return 0
    rows = [[*row, r["label"], f"{r['probability']:.4f}",
             ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"])]
            for row, r in zip(lead, records)]
    console().print(table(None, [*first, "class", "probability", f"top {args.top}"], rows, right={"probability"}))
    return 0


def _trained_target(model) -> str | int | None:
    """The CSV target column the model's training run named (its recorded data options), if any."""
    data = (model.manifest.hyperparameters or {}).get("data")
    options = data.get("options") if isinstance(data, dict) else None
    target = options.get("target") if isinstance(options, dict) else None
    return target if isinstance(target, (str, int)) and not isinstance(target, bool) else None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, got {text!r}")
    return int(text)

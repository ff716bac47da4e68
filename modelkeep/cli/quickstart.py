"""``modelkeep quickstart``: train, save, reload and predict on digits, end to end."""
from __future__ import annotations

import argparse

from ._output import console, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("quickstart", help="train a CNN on digits, save it, reload it and predict")
    parser.add_argument("--out", default="quickstart-run", help="output folder (default: ./quickstart-run)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--restart", action="store_true",
                        help="start over instead of resuming from OUT/checkpoints (they move into previous/)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..quickstart import run_quickstart

    out = console()
    out.print("[bold]modelkeep quickstart[/]: a small CNN on scikit-learn's 8x8 digits (1,797 images)", markup=True)
    report = run_quickstart(args.out, epochs=args.epochs, seed=args.seed, progress=False if args.quiet else "auto",
                            resume=not args.restart)
    if report.resumed_from:
        out.print(f"resumed from {report.resumed_from} in {report.checkpoint_dir}")
    out.print(f"checkpoints: every epoch in {report.checkpoint_dir} (the last 2 and the best by val_loss are kept; "
              "run the same command again to resume an interrupted run)")
    out.print(f"saved  {report.model_path}  ({report.file_bytes:,} bytes; spec in {report.spec_path})")
    out.print(f"reloaded it from the file: test accuracy {report.reloaded_accuracy:.4f}")
    rows = [[s["index"], s["true"], s["predicted"], f"{s['probability']:.3f}"] for s in report.samples]
    out.print(table("predictions of the reloaded model", ["#", "true", "predicted", "probability"], rows))
    out.print(f"test accuracy: {report.test_accuracy:.4f}")
    out.print(f"next: modelkeep inspect {report.model_path}")
    return 0

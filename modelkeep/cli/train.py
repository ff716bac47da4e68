"""``modelkeep train CONFIG.yaml [--run-dir DIR] [--set key=value ...]``: train from a config, save, report."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._output import console, print_json, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model from a YAML config; save it with its history and curves")
    parser.add_argument("config", help="a training config (.yaml); see examples/")
    parser.add_argument("--run-dir", type=Path, help="output folder (default: runs/<config name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (dotted keys, YAML values), e.g. --set epochs=5; repeatable")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="no progress output")
    output.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto",
                        help="progress bar in a terminal (auto), always a bar, or one line per epoch")
    parser.add_argument("--json", action="store_true", help="print the test metrics as JSON")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..train.config import load_config, run_training

    config = load_config(args.config, args.overrides)
    run_dir = args.run_dir or Path("runs") / (config.raw.get("name") or Path(args.config).stem)
    run = run_training(config, run_dir, progress=False if args.quiet else args.progress)
    result = run.result
    if args.json:
        print_json({"run_dir": str(run.run_dir), "model": str(run.model_path), "test": result.test_metrics,
                    "epochs_run": len(result.history), "best_epoch": result.best_epoch})
        return 0
    out = console()
    if result.stopped_early:
        out.print(f"early stopping after epoch {len(result.history)}; restored the weights of epoch {result.best_epoch}")
    out.print(f"saved  {run.model_path}  (history.csv, history.json, curves.png, metrics.json in {run.run_dir})")
    if result.test_metrics:
        rows = [[name, f"{value:.4f}"] for name, value in result.test_metrics.items()]
        out.print(table("test metrics (evaluated once, after training)", ["metric", "value"], rows, right={"value"}))
    return 0

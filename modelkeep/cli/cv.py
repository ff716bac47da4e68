"""``modelkeep cv CONFIG.yaml --folds K [--json]``: k-fold cross-validation, each fold and mean ± std."""
from __future__ import annotations

import argparse

from ._output import console, print_json, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("cv", help="k-fold cross-validation of a training config")
    parser.add_argument("config", help="a training config (.yaml)")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set epochs=5; repeatable")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..train.config import cross_validate, load_config

    config = load_config(args.config, args.overrides)
    out = console()
    quiet = args.quiet or args.json

    def on_fold(entry):
        if not quiet:
            scores = "  ".join(f"{k} {v:.4f}" for k, v in entry.items() if isinstance(v, float))
            out.print(f"fold {entry['fold']}/{args.folds}: {scores}")

    report = cross_validate(config, args.folds, progress=False if quiet else "lines", on_fold=on_fold)
    if args.json:
        print_json(report)
        return 0
    keys = list(report["summary"])
    rows = [[f["fold"], *(f"{f[k]:.4f}" for k in keys)] for f in report["folds"]]
    rows.append(["mean ± std", *(f"{report['summary'][k]['mean']:.4f} ± {report['summary'][k]['std']:.4f}" for k in keys)])
    out.print(table(f"{args.folds}-fold cross-validation on {report['dataset']} ({report['samples']} samples)",
                    ["fold", *keys], rows, right=set(keys)))
    return 0

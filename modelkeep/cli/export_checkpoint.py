"""``modelkeep export-checkpoint DIR OUT``: a release model file from a checkpoint (optimizer state dropped).

``DIR`` may be a run folder, its ``checkpoints/`` folder, or a sharded checkpoint (a ``step-<n>/`` folder written
by ``save_sharded``, or the folder holding them): the shards are assembled in this one process.
"""
from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export-checkpoint", help="write a release model file from a checkpoint")
    parser.add_argument("directory", metavar="DIR",
                        help="the run folder or its checkpoints/ folder, a sharded checkpoint (step-<n>/) or the folder "
                             "holding sharded checkpoints, or an fsspec URL such as s3://bucket/run")
    parser.add_argument("out", metavar="OUT")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, help="the checkpoint of this step (default: the newest good one)")
    which.add_argument("--best", action="store_true", help="the best checkpoint by the run's monitored metric")
    parser.add_argument("--metric", help="with --best: the metric to rank by (default: the one the run monitored)")
    parser.add_argument("--mode", choices=["min", "max"], help="with --metric: lower or higher is better")
    parser.add_argument("--with-optimizer", action="store_true", help="keep the optimizer state in the file")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..checkpoint.export import export_checkpoint

    path = export_checkpoint(args.directory, args.out, step=args.step, best=args.best, metric=args.metric,
                             mode=args.mode, with_optimizer=args.with_optimizer)
    print(f"wrote {path}")
    return 0

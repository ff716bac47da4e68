"""``modelkeep update FILE --watch DIR --out NEW [--checkpoint DIR] [--every N] [--max-batches N] [--until-idle S]``.

Keeps a saved model current on data that keeps arriving: every new ``.csv``/``.npy``/``.npz`` file in
``DIR`` (taken in name order; move files in whole) is read for the model and trained on, one optimizer
step per file or per ``--batch-size`` rows, checkpointed every ``--every`` batches. The same command,
run again (after a kill, or later when more files have arrived), resumes from the newest checkpoint
and skips the files already consumed; the result is bit-identical to an update never interrupted.
SIGTERM or Ctrl-C ends the update cleanly: the checkpoint is saved and NEW written. All the work is
``modelkeep.train.incremental.update_stream``'s.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._output import console, print_json, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "update", help="keep a saved model current: train it on new data files as they arrive in a folder",
        description="Train FILE further on the data files that appear in --watch DIR (name order), with "
                    "checkpoints every --every batches and exact resume, and save the result to --out with its "
                    "lineage (the parent's content hash, both data fingerprints, before/after scores).")
    parser.add_argument("model", metavar="FILE", help="the saved model to update (.safetensors)")
    parser.add_argument("--watch", type=Path, metavar="DIR", required=True,
                        help="the folder new data files (.csv, .npy, .npz) arrive in")
    parser.add_argument("--out", type=Path, metavar="NEW", required=True, help="where the updated model goes")
    parser.add_argument("--checkpoint", type=Path, metavar="DIR",
                        help="checkpoint folder (default: NEW's name + '.checkpoints'); run again to resume")
    parser.add_argument("--every", type=int, default=10, metavar="N", help="checkpoint every N batches (default 10)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="rows per optimizer step (default: a whole file)")
    parser.add_argument("--max-batches", type=int, metavar="N", help="stop after N batches in all (across resumes)")
    parser.add_argument("--until-idle", type=float, default=0.0, metavar="SECONDS",
                        help="stop after this long without a new file (default 0: the files there now)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help="how often to look for new files")
    parser.add_argument("--learning-rate", type=float, metavar="X", help="default: the file's recorded one")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of every random source (dropout)")
    parser.add_argument("--test", metavar="DATA", help="the new test set, scored before and after")
    parser.add_argument("--old-test", metavar="DATA", help="the old test set, scored before and after (its recorded "
                                                          "test split when DATA is the data the model was trained on)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("--quiet", action="store_true", help="no line per checkpoint interval")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..artifact import save
    from ..train.continued import open_parent
    from ..train.continued_config import read_old_test
    from ..train.incremental import FolderStream, update_stream

    checkpoint = args.checkpoint or args.out.with_name(args.out.name + ".checkpoints")
    status = sys.stderr if args.json else sys.stdout
    parent = open_parent(args.model)
    tests = {key: read_old_test(value, parent) for key, value in (("test", args.test), ("old_test", args.old_test))
             if value is not None}
    stream = FolderStream(args.watch, batch_size=args.batch_size, poll=args.poll, until_idle=args.until_idle)

    def report_batch(done: int, loss: float) -> None:
        if not args.quiet and done % args.every == 0:
            print(f"{done} batches  loss {loss:.4f}  (checkpoint in {checkpoint})", file=status, flush=True)

    result = update_stream(parent, stream, checkpoint=checkpoint, every=args.every, max_batches=args.max_batches,
                           learning_rate=args.learning_rate, seed=args.seed, on_batch=report_batch, **tests)
    path = save(result, args.out, optimizer=result.optimizer)  # the next update continues its moments
    batches = result.lineage["batches"]
    if args.json:
        print_json({"model": str(path), "batches": batches, "stopped_by": result.stopped_by,
                    "files": stream.done, "evaluation": result.evaluation})
        return 0
    out = console()
    out.print(f"saved  {path}  ({batches} batches in all; stopped: {result.stopped_by}; checkpoints in {checkpoint})")
    if result.evaluation:
        from ..train.continued import evaluation_rows

        header, rows = evaluation_rows(result.evaluation)
        out.print(table("before and after the update", header, rows, right={"before", "after", "change"}))
    return 0

"""``modelkeep train CONFIG.yaml [--run-dir DIR] [--restart] [--set key=value ...]``: train from a config, save, report.

A config with ``base:`` (a model file or a zoo model) or a ``transfer:`` section fine-tunes
(``modelkeep.transfer.config``); the run folder, checkpoints and resuming are the same.

Run again on the same folder, the command resumes from the newest good checkpoint in
``DIR/checkpoints``; ``--restart`` moves those into ``DIR/checkpoints/previous/`` and starts over.
SIGTERM or Ctrl-C saves a checkpoint at the next step and prints the command that resumes.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ._output import console, print_json, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model from a YAML config; save it with its history and curves")
    parser.add_argument("config", help="a training config (.yaml); see examples/")
    parser.add_argument("--run-dir", type=Path, help="output folder (default: runs/<config name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (dotted keys, YAML values), e.g. --set epochs=5; repeatable")
    parser.add_argument("--restart", action="store_true",
                        help="start over: move the run folder's checkpoints into checkpoints/previous/ "
                             "(replacing an older previous/) instead of resuming from them")
    add_run_output_flags(parser)
    parser.set_defaults(handler=handle)


def add_run_output_flags(parser: argparse.ArgumentParser) -> None:
    """--quiet / --progress and --json, shared by the commands that run training (train, finetune)."""
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="no progress output")
    output.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto",
                        help="progress bar in a terminal (auto), always a bar, or one line per epoch")
    parser.add_argument("--json", action="store_true", help="print the test metrics as JSON")


class _ResumeNotice:
    """Prints where a resumed run picks up (a callback: fit calls it once, after restoring)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def on_train_begin(self, state, logs) -> None:
        if state.resumed_from:
            from ..train.progress import describe_position
            from ._output import printable

            print(f"resuming from {printable(state.resumed_from.removesuffix('.safetensors'))} at "
                  f"{describe_position(state.epoch, state.batch, state.step)}", file=self.stream, flush=True)


def resume_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The command that continues this run: the same one, with the run folder spelled out and no --restart."""
    return shlex.join(["modelkeep", "train", str(args.config), "--run-dir", str(run_dir), *run_flags(args)])


def run_flags(args: argparse.Namespace) -> list[str]:
    """The --set, --quiet/--progress and --json flags of a run, as a resume command repeats them."""
    flags = []
    for override in args.overrides:
        flags += ["--set", override]
    if args.quiet:
        flags.append("--quiet")
    elif args.progress != "auto":
        flags += ["--progress", args.progress]
    if args.json:
        flags.append("--json")
    return flags


def _show_checkpoint_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    from ._output import printable  # a checkpoint warning can quote text that came from a file

    print(f"modelkeep: warning: {printable(' '.join(str(message).split()))}", file=sys.stderr, flush=True)


def handle(args: argparse.Namespace) -> int:
    from ..train.config import check_run_name
    from ..transfer.config import load_training_config, run_config

    # A config with `base:` or a `transfer:` section fine-tunes (modelkeep.transfer.config); any other trains.
    config = load_training_config(args.config, args.overrides)
    run_dir = args.run_dir or Path("runs") / check_run_name(config.raw.get("name") or Path(args.config).stem)
    return run_and_report(args, run_dir, lambda **options: run_config(config, run_dir, **options),
                          resume_command(args, run_dir))


def run_and_report(args: argparse.Namespace, run_dir: Path, run, resume: str) -> int:
    """Run ``run(progress=..., callbacks=...)`` (a training run writing ``run_dir``) with ``--restart``,
    checkpoint warnings and interruption handled, then print where the model went and its test metrics.
    ``resume`` is the command that continues the run (printed when it is interrupted)."""
    import warnings

    from ..checkpoint.manager import CheckpointWarning
    from ..checkpoint.storage import set_aside_checkpoints
    from ..errors import TrainingInterrupted
    from ..train.config import CHECKPOINTS

    # Status lines go to stderr when stdout carries JSON.
    status = sys.stderr if args.json else sys.stdout
    if args.restart:
        moved = set_aside_checkpoints(run_dir / CHECKPOINTS)
        if moved is not None:
            print(f"--restart: moved the earlier checkpoints to {moved}/ (delete it when no longer needed)",
                  file=status, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always", CheckpointWarning)
        previous = warnings.showwarning
        warnings.showwarning = lambda message, category, *rest: (
            _show_checkpoint_warnings(message, category, *rest) if issubclass(category, CheckpointWarning)
            else previous(message, category, *rest))
        try:
            result = run(progress=False if args.quiet else args.progress, callbacks=[_ResumeNotice(status)])
        except TrainingInterrupted as stop:
            print(stop.resume_message(resume), file=sys.stderr, flush=True)
            return stop.exit_code
    report(args, result)
    return 0


def report(args: argparse.Namespace, run) -> None:
    """What a finished run prints: JSON with ``--json``, else where it saved and the test metrics."""
    result = run.result
    if args.json:
        print_json({"run_dir": str(run.run_dir), "model": str(run.model_path), "test": result.test_metrics,
                    "epochs_run": len(result.history), "best_epoch": result.best_epoch})
        return
    out = console()
    if result.stopped_early:
        out.print(f"early stopping after epoch {len(result.history)}; restored the weights of epoch {result.best_epoch}")
    out.print(f"saved  {run.model_path}  (history.csv, history.json, curves.png, metrics.json in {run.run_dir})")
    if result.test_metrics:
        rows = [[name, f"{value:.4f}"] for name, value in result.test_metrics.items()]
        out.print(table("test metrics (evaluated once, after training)", ["metric", "value"], rows, right={"value"}))

"""``modelkeep train CONFIG.yaml [--run-dir DIR] [--restart] [--set key=value ...]``: train from a config, save, report.

A config with ``base:`` (a model file or a zoo model) or a ``transfer:`` section fine-tunes
(``modelkeep.transfer.config``); the run folder, checkpoints and resuming are the same.

Run again on the same folder, the command resumes from the newest good checkpoint in
``DIR/checkpoints``; ``--restart`` moves those into ``DIR/checkpoints/previous/`` and starts over.
SIGTERM or Ctrl-C saves a checkpoint at the next step and prints the command that resumes.
``--save-optimizer`` (the config's ``save_optimizer: true``) keeps the optimizer state in the model file, so a
later ``--init-from`` continues it.
"""
from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--init-from", metavar="FILE",
                        help="continue training this saved model on the config's data (its weights, classes, "
                             "preprocessing and optimizer state); the new file records the lineage")
    parser.add_argument("--old-test", metavar="DATA",
                        help="with --init-from: the old test set, scored before and after beside the new one "
                             "(its recorded test split when DATA is the data the model was trained on)")
    parser.add_argument("--save-optimizer", action="store_true",
                        help="keep the optimizer state (Adam's moments) in model.safetensors, so a later "
                             "`train --init-from` continues it rather than starting fresh (the config's "
                             "save_optimizer: true)")
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
    continued: list[str] = []
    for name, flag in (("init_from", "--init-from"), ("old_test", "--old-test")):
        if getattr(args, name, None):  # finetune's arguments have neither
            continued += [flag, str(getattr(args, name))]
    if getattr(args, "save_optimizer", False):
        continued.append("--save-optimizer")
    return shlex.join(["modelkeep", "train", str(args.config), "--run-dir", str(run_dir), *continued,
                       *run_flags(args)])


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
    from ..transfer.config import is_transfer_config, load_training_config, run_config

    # A config with `base:` or a `transfer:` section fine-tunes (modelkeep.transfer.config); any other trains.
    config = load_training_config(args.config, args.overrides)
    if args.save_optimizer:  # the flag is the config key: config.yaml in the run folder records it
        config.raw["save_optimizer"] = True
    run_dir = args.run_dir or Path("runs") / check_run_name(config.raw.get("name") or Path(args.config).stem)
    continued = {"init_from": args.init_from, "old_test": args.old_test} if args.init_from or args.old_test else {}
    if continued and is_transfer_config(config):
        from ..errors import ConfigError

        raise ConfigError("--init-from continues a saved model on a plain training config; this config fine-tunes "
                          "(base:/transfer:), which already starts from a model")
    return run_and_report(args, run_dir, lambda **options: run_config(config, run_dir, **continued, **options),
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
    from ..train.distributed import TorchrunEnvironment

    # Status lines go to stderr when stdout carries JSON. Under torchrun the coordinator alone prints, and
    # --restart is fit's resume=False, which moves the checkpoints between barriers (docs/scale.md).
    status = sys.stderr if args.json else sys.stdout
    processes = TorchrunEnvironment()
    several, coordinator = processes.present and processes.world_size > 1, processes.rank == 0
    restart = {"resume": False} if args.restart and several else {}
    if several:
        per_node = os.environ.get("LOCAL_WORLD_SIZE", str(processes.world_size))  # any number resumes (resharding)
        resume = resume.replace("modelkeep", f"torchrun --nproc-per-node {per_node} -m modelkeep", 1)
    if args.restart and not several:
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
            result = run(progress=False if args.quiet else args.progress,
                         callbacks=[_ResumeNotice(status)] if coordinator else [], **restart)
        except TrainingInterrupted as stop:
            if coordinator:
                print(stop.resume_message(resume), file=sys.stderr, flush=True)
            return stop.exit_code
    if coordinator:
        report(args, result)
    return 0


def report(args: argparse.Namespace, run) -> None:
    """What a finished run prints: JSON with ``--json``, else where it saved and the test metrics."""
    result = run.result
    if args.json:
        print_json({"run_dir": str(run.run_dir), "model": str(run.model_path), "test": result.test_metrics,
                    "epochs_run": len(result.history), "best_epoch": result.best_epoch,
                    **({"evaluation": result.evaluation} if getattr(result, "evaluation", None) else {})})
        return
    out = console()
    if result.stopped_early:
        out.print(f"early stopping after epoch {len(result.history)}; restored the weights of epoch {result.best_epoch}")
    out.print(f"saved  {run.model_path}  (history.csv, history.json, curves.png, metrics.json in {run.run_dir})")
    if result.test_metrics:
        rows = [[name, f"{value:.4f}"] for name, value in result.test_metrics.items()]
        out.print(table("test metrics (evaluated once, after training)", ["metric", "value"], rows, right={"value"}))
    if getattr(result, "evaluation", None):  # a continued run: forgetting shows on the old test set
        from ..train.continued import evaluation_rows

        header, rows = evaluation_rows(result.evaluation)
        out.print(table("before and after continued training", header, rows, right={"before", "after", "change"}))

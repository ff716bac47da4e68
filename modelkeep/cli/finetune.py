"""``modelkeep finetune BASE DATA [--head N] [--freeze SEL ...] [--l2sp ALPHA] ... [--run-dir DIR] [--out FILE]``.

The common case of a fine-tuning config, from flags: the flags become a config document (``base``, ``data``,
a ``transfer:`` section and the training keys; ``--set`` reaches any other key, e.g. ``--set
checkpoint.every_steps=50``) that ``modelkeep.transfer.config`` runs exactly as ``modelkeep train`` runs a
config file with ``base:``. Run again with the same ``--run-dir``, the command resumes from the newest good
checkpoint; ``--restart`` starts over.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from .train import add_run_output_flags, run_and_report, run_flags

# (flag, config key, section, type, help): one table makes the parser, the config and the resume command.
_SETTINGS: list[tuple[str, str, str | None, Any, str]] = [
    ("--head", "head", "transfer", int, "replace the head with a fresh one of N outputs (default: keep it)"),
    ("--freeze", "freeze", "transfer", str,
     "what stays frozen: all_but_head, all, or layer indices, names and globs (conv*); repeatable"),
    ("--unfreeze-every", "unfreeze_every", "transfer", int,
     "gradual unfreezing: one more block, from the head towards the input, every N epochs"),
    ("--blocks", "blocks", "transfer", str,
     "what a block is for --unfreeze-every: auto (from the layer names), layers, or globs (layer1_*); repeatable"),
    ("--discriminative", "discriminative", "transfer", float,
     "per-layer learning rates: layer l gets lr * A**(L - l), the head lr (0 < A <= 1)"),
    ("--l2sp", "l2sp", "transfer", float, "L2-SP: ALPHA/2 ||w - w0||^2 toward the base's weights"),
    ("--l2sp-beta", "l2sp_beta", "transfer", float, "L2-SP: BETA/2 ||w||^2 on the new (head) weights"),
    ("--batchnorm", "batchnorm", "transfer", str,
     "batch-norm statistics: frozen (never move), train (the default) or reestimate (on the new data first)"),
    ("--probe-epochs", "probe_epochs", "transfer", int, "linear probe first: only the head trains for N epochs"),
    ("--epochs", "epochs", None, int, "epochs in all (probe epochs included)"),
    ("--learning-rate", "learning_rate", None, float, "the head's learning rate (others follow from it)"),
    ("--batch-size", "batch_size", None, int, "mini-batch size"),
    ("--seed", "seed", None, int, "seed of every random source, the new head and the data split"),
]


_METAVARS = {"discriminative": "A", "l2sp": "ALPHA", "l2sp_beta": "BETA", "learning_rate": "X"}


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "finetune", help="fine-tune a saved model (or a zoo model) on new data: new head, freezing, L2-SP, ...",
        description="Fine-tune BASE on DATA and save the new model with its lineage (the base's content hash, "
                    "the transfer settings, the layers that trained). For all settings write a config with "
                    "base: and transfer: and run `modelkeep train CONFIG`.")
    parser.add_argument("base", metavar="BASE", help="a model file (.safetensors) or a zoo model name (random initial weights)")
    parser.add_argument("data", metavar="DATA", help="a dataset name (digits, ...) or a CSV/.npy/.npz file or image folder")
    for flag, key, _, kind, text in _SETTINGS:
        repeatable = {"freeze": "SEL", "blocks": "BLOCK"}
        extra = ({"action": "append", "metavar": repeatable[key]} if key in repeatable
                 else {"metavar": _METAVARS.get(key, "N")})
        extra.update({"choices": ["frozen", "train", "reestimate"], "metavar": None} if key == "batchnorm" else {})
        parser.add_argument(flag, dest=key, type=kind, help=text, **extra)
    parser.add_argument("--run-dir", type=Path, metavar="DIR", help="run folder: checkpoints, history, curves (default: "
                                                     "runs/finetune-<base name>); run again to resume")
    parser.add_argument("--out", type=Path, metavar="FILE", help="where the fine-tuned model goes (default: RUN_DIR/model.safetensors)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any other config key (dotted keys, YAML values), e.g. --set transfer.groups=...; "
                             "repeatable")
    parser.add_argument("--restart", action="store_true",
                        help="start over: move the run folder's checkpoints into checkpoints/previous/")
    add_run_output_flags(parser)
    parser.set_defaults(handler=handle)


def config_document(args: argparse.Namespace) -> dict[str, Any]:
    """The config the flags say: ``base``, ``data``, ``transfer`` and the training keys given."""
    document: dict[str, Any] = {"base": args.base, "data": _data(args.data)}
    transfer: dict[str, Any] = {}
    for _, key, section, _, _ in _SETTINGS:
        value = getattr(args, key)
        if value is None or key == "l2sp_beta":
            continue
        (transfer if section == "transfer" else document)[key] = value
    if args.l2sp_beta is not None:
        transfer["l2sp"] = {"alpha": args.l2sp if args.l2sp is not None else 0.0, "beta": args.l2sp_beta}
    chosen = transfer.get("freeze")
    if chosen is not None and len(chosen) == 1 and chosen[0] in ("all", "all_but_head", "none"):
        transfer["freeze"] = chosen[0]
    elif chosen is not None:  # layer indices are numbers; names and globs stay text
        transfer["freeze"] = [int(s) if s.lstrip("-").isdigit() else s for s in chosen]
    blocks = transfer.get("blocks")
    if blocks is not None and len(blocks) == 1 and blocks[0] in ("auto", "layers"):
        transfer["blocks"] = blocks[0]
    document["transfer"] = transfer
    return document


def _data(source: str) -> dict[str, str]:
    """A dataset name or a file, as a config's ``data:`` names it."""
    return {"path": source} if Path(source).exists() else {"name": source}


def resume_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The command that continues this run: the same one, with the run folder spelled out and no --restart."""
    command = ["modelkeep", "finetune", args.base, args.data]
    for flag, key, _, _, _ in _SETTINGS:
        value = getattr(args, key)
        for item in value if isinstance(value, list) else [] if value is None else [value]:
            command += [flag, str(item)]
    command += ["--run-dir", str(run_dir)] + (["--out", str(args.out)] if args.out else [])
    return shlex.join(command + run_flags(args))


def handle(args: argparse.Namespace) -> int:
    from ..train.config import check_run_name
    from ..transfer.config import load_training_config, run_transfer

    config = load_training_config(config_document(args), args.overrides)
    run_dir = args.run_dir or Path("runs") / check_run_name(f"finetune-{Path(args.base).stem}")
    return run_and_report(args, run_dir, lambda **options: run_transfer(config, run_dir, model_path=args.out,
                                                                         **options),
                          resume_command(args, run_dir))

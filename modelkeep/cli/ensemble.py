"""``modelkeep ensemble A B C --method soft-vote [--weights 1,2,1] --out E.safetensors``: one file of several models.

``--method stacking --data VALIDATION [--split validation]`` fits the meta-model on that data.

All the work is ``modelkeep.ensemble.ensemble``; this module parses and prints.
"""
from __future__ import annotations

import argparse

from ..errors import ConfigError

# modelkeep.nn.ensemble.METHODS, named here without importing torch (the CLI starts fast)
_METHODS = ("average", "weighted", "soft-vote", "majority", "stacking")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("ensemble", help="combine saved models into one ensemble model file")
    parser.add_argument("files", nargs="+", metavar="FILE", help="the member model files (two or more)")
    parser.add_argument("--out", required=True, metavar="OUT", help="the ensemble file to write")
    parser.add_argument("--method", choices=_METHODS, default="soft-vote",
                        help="how outputs are combined (default: soft-vote; regression: average or weighted)")
    parser.add_argument("--weights", metavar="W1,W2,...",
                        help="one weight per member, comma-separated; normalised to sum to one")
    parser.add_argument("--data", metavar="VALIDATION",
                        help="stacking: validation data (a dataset name, or a CSV/.npy/.npz file or image folder) the "
                             "members did not train on")
    parser.add_argument("--split", choices=("all", "train", "validation", "test"), default="all",
                        help="stacking: all of --data (default), or the part the first member's training run split off")
    parser.add_argument("--penalty", type=float, default=1e-3,
                        help="stacking: L2 strength on the meta-model's weights (default: 0.001)")
    parser.add_argument("--no-share", action="store_true",
                        help="store every member's tensors even when identical to another member's")
    parser.set_defaults(handler=handle)


def parse_weights(text: str | None) -> list[float] | None:
    """``"1,2,1"`` as ``[1.0, 2.0, 1.0]``; ``ConfigError`` for anything else."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--weights must be numbers separated by commas, like 1,2,1; got {text[:60]!r}") from None


def handle(args: argparse.Namespace) -> int:
    from ..ensemble import ensemble

    path = ensemble(args.files, args.out, method=args.method, weights=parse_weights(args.weights),
                    validation=args.data, split=args.split, penalty=args.penalty, share=not args.no_share)
    print(f"wrote {path} ({len(args.files)} members, {args.method})")
    return 0

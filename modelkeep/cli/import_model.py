"""``modelkeep import SRC OUT``: a PyTorch, safetensors, Keras or Hugging Face model in, as a modelkeep file.

All the work is ``modelkeep.import_model``; this module turns flags into its arguments and prints
its report: the format, the source's SHA-256, the key report (counts and the first names) and
the output path. Names in the report come from the file, so they are printed escaped.
"""
from __future__ import annotations

import argparse

from ._options import TRUST_CODE, add_trust_code, naming_flags

# The keywords import_model's refusals advise, and the flags that say the same here.
_FLAGS = (TRUST_CODE, ("spec=", "--spec"), ("zoo=", "--zoo"), ("model_class=", "--class"), ("init=", "--set"))


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import", help="import a model from PyTorch, safetensors, Keras or Hugging Face as a modelkeep file",
        description="Read SRC without unpickling or running anything from it (the format is recognised from the "
                    "content), match its weights onto a network and write OUT, an ordinary modelkeep file whose "
                    "provenance records SRC's SHA-256 and format. Weights alone (a state dict) need --spec, --zoo "
                    "or --class; Keras files and Hugging Face folders carry their architecture.")
    parser.add_argument("source", metavar="SRC", help="a .pt/.pth/.bin, safetensors, .keras/.h5 or .onnx file, or a "
                                                      "Hugging Face or TensorFlow SavedModel folder")
    parser.add_argument("out", metavar="OUT", help="the modelkeep file to write (e.g. model.safetensors)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--spec", metavar="SPEC", help="a JSON/YAML spec file (or zoo name) the weights belong to")
    target.add_argument("--zoo", metavar="NAME", help="a zoo model the weights belong to (see `modelkeep zoo list`)")
    target.add_argument("--class", dest="model_class", metavar="MODULE:CLASS",
                        help="your nn.Module class, imported by name: needs --trust-code")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a zoo option (num_classes=10), a spec field (LAYER.FIELD=VALUE) or, with --class, a "
                             "constructor argument; repeatable")
    parser.add_argument("--layout", metavar="NAME",
                        help="the other library's weight names for a zoo model (torchvision, timm, huggingface; "
                             "'modelkeep' for our own); default: whichever fits")
    parser.add_argument("--map", dest="mapping", action="append", default=[], metavar="OLD=NEW",
                        help="rename the file's tensors under prefix OLD to NEW (e.g. backbone.=features.); "
                             "repeatable")
    parser.add_argument("--strict", action="store_true",
                        help="fail, writing nothing, unless every tensor fits the network and the network has no other")
    parser.add_argument("--labels", metavar="A,B,...", help="class names, in the order of the network's outputs")
    parser.add_argument("--task", choices=("classification", "regression"), help="what the outputs mean")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_trust_code(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from .._overrides import parse_overrides
    from ..errors import ConfigError
    from ..importers import import_model
    from ._output import print_json, printable

    settings = parse_overrides(args.overrides, error=ConfigError) if args.overrides else {}
    options: dict = {}
    if args.model_class is not None:
        options["init"] = settings or None
    else:
        options.update(settings)
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    with naming_flags(*_FLAGS):
        report = import_model(args.source, args.out, spec=args.spec, zoo=args.zoo, model_class=args.model_class,
                              trust_code=args.trust_code, layout=args.layout, mapping=args.mapping,
                              strict=args.strict, labels=labels, task=args.task, **options)
    if args.json:
        print_json(report.to_dict())
    else:
        print(printable(report.summary(), keep_newlines=True))
    return 0

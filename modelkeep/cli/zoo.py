"""``modelkeep zoo list`` and ``modelkeep zoo show NAME``: the architectures that ship as specs."""
from __future__ import annotations

import argparse

from ._output import console, print_json, table
from .params import add_spec_options, parse_overrides, parse_shape


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("zoo", help="list the zoo's architectures or print one as a spec")
    actions = parser.add_subparsers(dest="zoo_command", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser("list", help="every zoo model with its input shape and parameter count")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=handle_list)

    show = actions.add_parser("show", help="print a zoo model's spec (JSON, or YAML with --yaml)")
    show.add_argument("name", help="a zoo model name")
    add_spec_options(show)
    show.add_argument("--yaml", action="store_true", help="print YAML instead of JSON")
    show.set_defaults(handler=handle_show)


def handle_list(args: argparse.Namespace) -> int:
    from ..spec import count_parameters
    from ..zoo import ZOO

    entries = []
    for name in ZOO.names():
        entry = ZOO.get(name)
        spec = entry.spec()
        entries.append({
            "name": name, "description": entry.description, "parameters": count_parameters(spec).total,
            "input_shape": list(spec.input_shape), "output_shape": list(spec.output_shape),
            "options": entry.options(),
        })
    if args.json:
        print_json(entries)
        return 0
    rows = [[e["name"], "x".join(map(str, e["input_shape"])), f"{e['parameters']:,}", e["description"]]
            for e in entries]
    console().print(table("zoo", ["name", "input", "parameters", "description"], rows, right={"parameters"}))
    return 0


def handle_show(args: argparse.Namespace) -> int:
    from ..zoo import resolve_spec

    spec = resolve_spec(args.name, overrides=parse_overrides(args.overrides), input_shape=parse_shape(args.input_shape))
    if args.yaml:
        print(spec.to_yaml(), end="")
    else:
        print_json(spec.to_dict())
    return 0

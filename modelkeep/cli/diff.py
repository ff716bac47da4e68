"""``modelkeep diff A B``: which tensors differ (and by how much), which are equal, what metadata changed.

All the work is ``modelkeep.artifact.diff.diff_files``; this module prints it.
"""
from __future__ import annotations

import argparse

from ._output import console, plain_printer, print_json, printable_document, table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("diff", help="compare two model files: tensors and metadata")
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--verify", action="store_true",
                        help="check every tensor hash of both files first (tensors are always compared by their bytes, "
                             "never by the recorded hashes alone)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..artifact.diff import diff_files

    report = diff_files(args.a, args.b, verify=args.verify)
    if args.json:
        print_json(report)
        return 0
    out = console()
    say = plain_printer(out)  # text from the file is never markup
    report = printable_document(report)  # nor escape codes, nor a line of its own (cli/_output.py)

    say(f"A {report['a']}\nB {report['b']}")
    say(f"tensors: {len(report['equal'])} equal, {len(report['different'])} different, "
              f"{len(report['only_in_a'])} only in A, {len(report['only_in_b'])} only in B")
    if report["different"]:
        rows = []
        for item in report["different"]:
            if item["change"] == "layout":
                rows.append([item["name"], f"{item['a']['dtype']} {item['a']['shape']} -> "
                             f"{item['b']['dtype']} {item['b']['shape']}", "", "", ""])
            else:
                rows.append([item["name"], f"{item['dtype']} {item['shape']}", f"{item['max_abs_diff']:.4g}"
                             if isinstance(item["max_abs_diff"], float) else item["max_abs_diff"],
                             f"{item['relative_l2']:.4g}" if isinstance(item["relative_l2"], float) else "-",
                             f"{100 * item['changed_fraction']:.1f}%"])
        out.print(table("different tensors", ["tensor", "dtype/shape", "max |a-b|", "rel. L2", "changed"], rows,
                        right={"max |a-b|", "rel. L2", "changed"}))
    for side in ("only_in_a", "only_in_b"):
        if report[side]:
            say(f"{side.replace('_', ' ')}: {', '.join(report[side][:20])}"
                      + (" ..." if len(report[side]) > 20 else ""))
    if report["metadata_changes"]:
        say(f"metadata: {len(report['metadata_changes'])} change(s)"
                  + (" (list truncated)" if report["metadata_changes_truncated"] else ""))
        for change in report["metadata_changes"]:
            if change["change"] == "changed":
                say(f"  {change['path']}: {change['a']!r} -> {change['b']!r}")
            else:
                value = change.get("a", change.get("b"))
                say(f"  {change['path']}: {change['change']} {value!r}")
    else:
        say("metadata: identical")
    return 0

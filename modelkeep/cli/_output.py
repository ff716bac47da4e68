"""Printing for the CLI: JSON for machines, rich tables for people."""
from __future__ import annotations

import json
import sys
from typing import Any


def print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def console():
    from rich.console import Console

    return Console()


def plain_printer(out):
    """A print function for text that comes from a file: never interpreted as rich markup."""

    def say(text: str) -> None:
        out.print(text, markup=False, highlight=False)

    return say


def table(title: str | None, columns: list[str], rows: list[list[Any]], *, right: set[str] = frozenset()):
    from rich.table import Table

    result = Table(title=title, title_justify="left")
    for column in columns:
        result.add_column(column, justify="right" if column in right else "left")
    for row in rows:
        result.add_row(*(str(cell) for cell in row))
    return result

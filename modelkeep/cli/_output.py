"""Printing for the CLI: JSON for machines, rich tables and plain lines for people.

Everything a command prints goes through here, and much of it came from a file: labels, card
fields, layer and tensor names, values quoted in error messages. Such text is never interpreted:

* control characters (C0, DEL, C1 — ESC among them — and the Unicode bidirectional overrides and
  line separators) are shown as escapes such as ``\\x1b``, so a file cannot retitle the window,
  move the cursor to forge a line, or write the clipboard (OSC 52);
* rich markup (``[red]``, ``[link=...]``) prints literally: the console built here has markup off,
  and table cells are plain ``Text``;
* JSON is always valid JSON: non-finite numbers become ``null`` and every control character is a
  ``\\u`` escape inside its string.

This module must never print a string that came from a file without one of these functions.
"""
from __future__ import annotations

import functools
import json
import math
import re
import sys
from typing import Any

# C0 but newline and tab, DEL, C1, the bidirectional marks, embeddings, overrides and isolates, and
# the line and paragraph separators (which some terminals break lines on)
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_CONTROL}]")
_UNSAFE_OR_LINE_BREAK = re.compile(f"[{_CONTROL}\n\t]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``); newlines and tabs too
    unless ``keep_newlines`` (for a message this program laid out on several lines)."""
    pattern = _UNSAFE if keep_newlines else _UNSAFE_OR_LINE_BREAK
    return pattern.sub(_escape, text)


def printable_document(document: Any) -> Any:
    """A JSON-like document (dicts, lists, strings, numbers) with every string, keys included, made
    ``printable`` — newlines escaped too, since a value that came from a file is one item on one line."""
    if isinstance(document, str):
        return printable(document)
    if isinstance(document, dict):
        return {printable_document(key): printable_document(value) for key, value in document.items()}
    if isinstance(document, (list, tuple)):
        return [printable_document(item) for item in document]
    return document


def _jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold replaced: non-finite floats by None, NumPy scalars and arrays by
    Python numbers and lists, tuples by lists; anything else unknown becomes its ``str``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {(key if isinstance(key, str) else str(_jsonable(key))): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # a NumPy scalar or array, a torch tensor
        return _jsonable(value.tolist())
    return str(value)


def json_text(document: Any) -> str:
    """``document`` as strict JSON: NaN and infinities are ``null``, control characters ``\\u`` escapes."""
    text = json.dumps(_jsonable(document), indent=2, allow_nan=False, ensure_ascii=True)
    return text.replace("\x7f", "\\u007f")  # ensure_ascii keeps DEL raw on some Pythons; only strings hold it


def print_json(document: Any) -> None:
    sys.stdout.write(json_text(document))
    sys.stdout.write("\n")


@functools.lru_cache(maxsize=None)
def _console_class() -> type:
    from rich.console import Console

    class LiteralConsole(Console):
        """A rich console that prints strings literally: markup off unless asked for, control characters escaped."""

        def print(self, *objects: Any, **options: Any) -> None:
            super().print(*(printable(item, keep_newlines=True) if isinstance(item, str) else item
                            for item in objects), **options)

    return LiteralConsole


def console():
    """The console every command prints to: strings are never markup (pass ``markup=True`` for a literal of
    this program's own) and their control characters are escaped."""
    return _console_class()(markup=False, highlight=False)


def plain_printer(out):
    """A print function for lines that hold text from a file: never markup, control characters escaped
    (the newlines this program put in are kept; escape a file's own with ``printable_document``)."""

    def say(text: str) -> None:
        out.print(printable(text, keep_newlines=True), markup=False, highlight=False)

    return say


def literal(value: Any):
    """``value`` as a rich ``Text`` shown exactly as written, on one line: for a table cell or title."""
    from rich.text import Text

    return value if isinstance(value, Text) else Text(printable(str(value)))


def table(title: str | None, columns: list[str], rows: list[list[Any]], *, right: set[str] = frozenset()):
    """A table whose title and cells are shown literally (each one line, control characters escaped)."""
    from rich.table import Table

    result = Table(title=None if title is None else literal(title), title_justify="left")
    for column in columns:
        result.add_column(literal(column), justify="right" if column in right else "left")
    for row in rows:
        result.add_row(*(literal(cell) for cell in row))
    return result

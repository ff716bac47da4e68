"""What every importer shares: the ``Imported`` record a reader returns, and the ``READERS`` registry.

A reader knows one foreign format. ``sniff`` decides from the file's content
(its first bytes, or a folder's files), never from its name, whether the
format is its own; ``read`` turns the file into an ``Imported``: tensors, and
the architecture when the file carries one (Keras, Hugging Face). Readers
never unpickle and never run code from the file; they check declared sizes
against ``ReaderLimits`` before allocating.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .._registry import Registry
from ..errors import FormatError

SNIFF_BYTES = 4096  # how much of a file readers are shown to recognise their format


@dataclass
class Imported:
    """What a reader found in a foreign file.

    ``tensors`` are named as the source names them, unless ``spec`` is set: a
    reader that also recovers the architecture (Keras, Hugging Face) returns
    the spec and the tensors under the built spec's state-dict names.
    """

    format: str                                   # "pytorch", "safetensors", "keras", "keras-h5", "huggingface", ...
    tensors: dict[str, Any]                       # name -> torch.Tensor
    spec: Any = None                              # a ModelSpec, when the file carries its architecture
    labels: list[str] | None = None
    preprocessing: Any = None                     # what modelkeep.save takes as preprocessing=
    postprocessing: str | None = None             # "softmax", "sigmoid", "identity" or None (derived)
    task: str | None = None
    details: dict[str, Any] = field(default_factory=dict)   # format facts recorded in the provenance
    notes: list[str] = field(default_factory=list)          # what the user should know (skipped extras, ...)


@runtime_checkable
class Reader(Protocol):
    format: str          # short name, recorded in the provenance
    description: str     # one line for `modelkeep import --help` and errors

    def sniff(self, path: Path, head: bytes) -> bool:
        """True if ``path`` is in this format. ``head``: its first ``SNIFF_BYTES`` bytes (b"" for a folder)."""

    def read(self, path: Path, limits: Any) -> Imported:
        """Read ``path`` (``limits``: a ``modelkeep.data.ReaderLimits``); raise ``FormatError`` on bad input."""


READERS: Registry[Reader] = Registry("import format", FormatError)
_ORDER: list[Reader] = []


def register_reader(reader: Reader) -> Reader:
    """Add ``reader`` to ``READERS`` under its ``format``; ``readers()`` lists them in registration order."""
    READERS.register(reader.format, reader)
    _ORDER.append(reader)
    return reader


def readers() -> list[Reader]:
    """Every registered reader, in the order they are tried on a file."""
    return list(_ORDER)

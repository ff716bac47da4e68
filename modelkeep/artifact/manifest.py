"""The manifest: everything in a model file besides its tensors, as one validated JSON document.

Sections are optional unless marked; readers keep sections they do not know
(a newer writer may add them) and refuse only a newer format version.
``docs/format.schema.json`` (shipped as ``manifest.schema.json`` beside this
module) is the normative schema; ``Manifest.from_document`` is what the reader
enforces, in plain Python: reading a manifest imports neither torch, NumPy nor
pydantic (``modelkeep inspect`` stays fast), and never imports any class the
file names. Manifests are made in one place only: ``manifest_builder``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import FormatError, UnsupportedVersionError
from .format import FORMAT_VERSION, KEY_MANIFEST, Header, parse_json_metadata, read_header
from .integrity import require_integrity, verify_header

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Manifest:
    """The ``modelkeep.manifest`` document (see docs/format.md, section 3).

    Every section but ``format_version`` and ``architecture`` is optional
    (``None`` when absent). Sections this modelkeep does not know are kept in
    ``unknown`` (also readable as ``model_extra``), never dropped.
    """

    format_version: int
    architecture: dict[str, Any]
    task: str = "classification"
    labels: list[str] | None = None
    preprocessing: dict[str, Any] | None = None
    postprocessing: dict[str, Any] | None = None
    history: dict[str, list[Any]] | None = None
    metrics: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    signature: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    card: dict[str, Any] | None = None
    lineage: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    unknown: dict[str, Any] = field(default_factory=dict)

    # The sections in the order writers put them; each is checked by ``check_section``.
    SECTIONS: ClassVar[tuple[str, ...]] = (
        "format_version", "architecture", "task", "labels", "preprocessing", "postprocessing", "history", "metrics",
        "hyperparameters", "signature", "provenance", "card", "lineage", "optimizer", "scheduler",
    )

    @property
    def architecture_type(self) -> str:
        return str(self.architecture.get("type"))

    @property
    def model_extra(self) -> dict[str, Any]:
        """The sections this modelkeep does not know (the name docs/format.md promises)."""
        return self.unknown

    @classmethod
    def sections(cls) -> tuple[str, ...]:
        return cls.SECTIONS

    @classmethod
    def from_document(cls, document: Any, where: object = "manifest") -> "Manifest":
        """A ``Manifest`` from a decoded JSON document; any problem is a ``FormatError`` naming the section."""
        if not isinstance(document, dict):
            raise FormatError(f"{where}: the manifest must be a JSON object, got {type(document).__name__}")
        values: dict[str, Any] = {}
        for name in cls.SECTIONS:
            if name in document:
                values[name] = check_section(name, document[name], where)
            elif name in ("format_version", "architecture"):
                raise FormatError(f"{where}: manifest field {name!r} is invalid: Field required")
        unknown = {key: value for key, value in document.items() if key not in cls.SECTIONS}
        return cls(**values, unknown=unknown)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: known sections in writing order (absent ones left out), then unknown ones."""
        document = {name: getattr(self, name) for name in self.SECTIONS if getattr(self, name) is not None}
        document.update(self.unknown)
        return document


def check_section(name: str, value: Any, where: object) -> Any:
    def invalid(message: str) -> FormatError:
        return FormatError(f"{where}: manifest field {name!r} is invalid: {message}")

    if name == "format_version":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(f"Input should be a valid integer, got {type(value).__name__}")
        return value
    if name == "architecture":
        if not isinstance(value, dict):
            raise invalid(f"Input should be a valid dictionary, got {type(value).__name__}")
        return dict(value)
    if name == "task":
        if value not in TASKS:
            raise invalid(f"Input should be 'classification' or 'regression', got {str(value)[:40]!r}")
        return value
    if value is None:
        return None
    if name == "labels":
        if not isinstance(value, list):
            raise invalid(f"Input should be a valid list, got {type(value).__name__}")
        for i, label in enumerate(value):
            if not isinstance(label, str):
                raise FormatError(f"{where}: manifest field 'labels.{i}' is invalid: Input should be a valid string")
        return list(value)
    if not isinstance(value, dict):
        raise invalid(f"Input should be a valid dictionary, got {type(value).__name__}")
    if name == "history":
        for key, column in value.items():
            if not isinstance(column, list):
                raise FormatError(f"{where}: manifest field 'history.{str(key)[:40]}' is invalid: "
                                  "Input should be a valid list")
    return dict(value)


def validate_manifest(document: Any, where: object = "manifest") -> Manifest:
    """A ``Manifest`` from a decoded JSON document; any problem is a ``FormatError`` naming the field."""
    return Manifest.from_document(document, where)


def read_manifest(path: str | Path, *, verify: bool = True) -> tuple[Header, Manifest]:
    """The validated header and manifest of a modelkeep file, without reading any tensor data.

    With ``verify`` the hashes of the metadata and of the tensor layout are
    checked (from the header alone) before the manifest is even parsed.
    """
    header = read_header(path)
    version = header.format_version()
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{header.path} was written in modelkeep format version {version}; this modelkeep reads up to "
            f"version {FORMAT_VERSION}. Upgrade modelkeep to load it"
        )
    if version < 1:
        raise FormatError(f"{header.path}: format version {version} does not exist; versions start at 1")
    if verify:
        verify_header(header, require_integrity(header))
    document = parse_json_metadata(header, KEY_MANIFEST)
    manifest = validate_manifest(document, header.path)
    if manifest.format_version != version:
        raise FormatError(
            f"{header.path}: the manifest says format version {manifest.format_version} but the header says {version}"
        )
    return header, manifest


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of the manifest (identical to ``docs/format.schema.json``)."""
    from importlib.resources import files

    return json.loads(files(__package__).joinpath("manifest.schema.json").read_text(encoding="utf-8"))


__all__ = ["Manifest", "TASKS", "check_section", "manifest_schema", "read_manifest", "validate_manifest"]

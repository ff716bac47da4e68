"""The manifest: everything in a model file besides its tensors, as one validated JSON document.

Sections are optional unless marked; readers keep fields they do not know
(a newer writer may add sections) and refuse only a newer format version.
``docs/format.schema.json`` (shipped as ``manifest.schema.json`` beside this
module) is the normative schema; the pydantic model here is what the reader
enforces. Reading a manifest never imports torch and never imports any class
the file names.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import FormatError, IntegrityError, ModelkeepError, UnsupportedVersionError
from .format import FORMAT_VERSION, KEY_MANIFEST, Header, parse_json_metadata, read_header
from .integrity import read_integrity, verify_header

# "package.module:Outer.Inner": dotted identifiers only, so the string can never be anything but a name.
CLASS_REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Manifest(BaseModel):
    """The ``modelkeep.manifest`` document (see docs/format.md)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    format_version: int
    architecture: dict[str, Any]
    task: Literal["classification", "regression"] = "classification"
    labels: list[str] | None = None
    preprocessing: dict[str, Any] | None = None
    history: dict[str, list[Any]] | None = None
    metrics: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    signature: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    card: dict[str, Any] | None = None
    lineage: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None

    @property
    def architecture_type(self) -> str:
        return str(self.architecture.get("type"))

    def spec_dict(self) -> dict[str, Any]:
        arch = self.architecture
        if arch.get("type") != "spec" or not isinstance(arch.get("spec"), dict):
            raise FormatError(
                f"this file's architecture is of type {str(arch.get('type'))[:40]!r}; only 'spec' architectures can "
                "be rebuilt without code"
            )
        return arch["spec"]

    def model_spec(self, where: object = "the file") -> Any:
        """The ``ModelSpec`` of a spec architecture; anything wrong with it is a ``FormatError``."""
        from ..spec.model import ModelSpec

        data = self.spec_dict()
        try:
            return ModelSpec.from_dict(data)
        except ModelkeepError as exc:
            raise FormatError(f"{where}: the architecture in the file is invalid: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, RecursionError) as exc:
            # The spec is untrusted data; a spec parser that trips on it is still the file's fault.
            raise FormatError(
                f"{where}: the architecture in the file is invalid ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None

    def class_reference(self) -> tuple[str, dict[str, Any]]:
        """``("package.module:QualName", init_kwargs)`` of a user-class architecture, validated but not imported."""
        arch = self.architecture
        reference, init = arch.get("class"), arch.get("init", {})
        if arch.get("type") != "class" or not isinstance(reference, str) or not CLASS_REFERENCE.match(reference):
            raise FormatError(
                f"a 'class' architecture needs 'class': 'package.module:QualName', got {str(reference)[:80]!r}"
            )
        if not isinstance(init, dict):
            raise FormatError(f"the 'init' arguments of class {reference} must be a JSON object")
        return reference, init


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
        integrity = read_integrity(header)
        if integrity is None:
            raise IntegrityError(
                f"{header.path} records no integrity hashes, so it cannot be verified; pass verify=False "
                "(or --no-verify) to read it anyway"
            )
        verify_header(header, integrity)
    document = parse_json_metadata(header, KEY_MANIFEST)
    manifest = validate_manifest(document, header.path)
    if manifest.format_version != version:
        raise FormatError(
            f"{header.path}: the manifest says format version {manifest.format_version} but the header says {version}"
        )
    return header, manifest


def validate_manifest(document: Any, where: object = "manifest") -> Manifest:
    """A ``Manifest`` from a decoded JSON document; any problem is a ``FormatError`` naming the field."""
    if not isinstance(document, dict):
        raise FormatError(f"{where}: the manifest must be a JSON object, got {type(document).__name__}")
    try:
        return Manifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise FormatError(f"{where}: manifest field {field!r} is invalid: {first['msg']}") from None


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of the manifest (identical to ``docs/format.schema.json``)."""
    from importlib.resources import files

    return json.loads(files(__package__).joinpath("manifest.schema.json").read_text(encoding="utf-8"))


def provenance(data_fingerprint: str | None = None) -> dict[str, Any]:
    """Where and with what a model was made."""
    from .. import __version__

    record: dict[str, Any] = {
        "modelkeep_version": __version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(terse=True),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        record["torch_version"] = torch.__version__
    commit = _git_commit()
    if commit:
        record["git_commit"] = commit
    if data_fingerprint:
        record["data_fingerprint"] = data_fingerprint
    return record


def _git_commit() -> str | None:
    """The commit of the code that is training, when it runs inside a git work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None

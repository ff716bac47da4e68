"""The manifest: everything in a model file besides its tensors, as one validated JSON document.

Sections are optional unless marked; readers keep fields they do not know
(a newer writer may add sections) and refuse only a newer *major* format
version. Reading a manifest never imports torch.
"""
from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import FormatError, UnsupportedVersionError
from .format import FORMAT_VERSION, KEY_MANIFEST, Header, parse_json_metadata, read_header


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

    def spec_dict(self) -> dict[str, Any]:
        arch = self.architecture
        if arch.get("type") != "spec" or not isinstance(arch.get("spec"), dict):
            raise FormatError(
                f"this file's architecture is of type {arch.get('type')!r}; only 'spec' architectures can be rebuilt "
                "without code"
            )
        return arch["spec"]


def read_manifest(path: str | Path) -> tuple[Header, Manifest]:
    """The validated header and manifest of a modelkeep file, without reading any tensor data."""
    header = read_header(path)
    version = header.format_version()
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{header.path} was written in modelkeep format version {version}; this modelkeep reads up to "
            f"version {FORMAT_VERSION}. Upgrade modelkeep to load it"
        )
    document = parse_json_metadata(header, KEY_MANIFEST)
    if not isinstance(document, dict):
        raise FormatError(f"{header.path}: the manifest must be a JSON object")
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FormatError(f"{header.path}: manifest field {where!r} is invalid: {first['msg']}") from None
    return header, manifest


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

"""``import_model``: a model file from elsewhere in, as an ordinary modelkeep file.

The reader is chosen from the file's content (``readers()`` in order, each ``sniff``-ing the
first bytes, or a folder's files), never from its extension. The weights are matched onto the
target (``target.py``: the file's own architecture, a spec, a zoo model in one of its layouts, or
a class), the result is written by ``modelkeep.save`` (atomic), and the provenance records the
source: its file name, SHA-256, size, format and what the reader and the matching did. Nothing
from the source is ever unpickled or run; a ``strict`` import that does not fit writes nothing.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, FormatError, ModelNotFoundError
from .base import SNIFF_BYTES, readers

MAX_FOLDER_FILES = 10_000  # files hashed for a folder source (a Hugging Face model folder has a handful)


@dataclass(frozen=True)
class ImportReport:
    """What ``import_model`` did: where it wrote, what it read, and how the weights fit."""

    path: Path                      # the modelkeep file written (or that would have been, when strict failed)
    source: Path
    format: str                     # the reader's format name: "pytorch", "safetensors", "keras", ...
    sha256: str                     # of the source file (of its files' list of hashes, for a folder)
    target: str                     # what the weights were matched onto: "zoo resnet18", "class pkg.mod:Net", ...
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)      # in the model, not in the file: left as initialised
    unexpected: list[str] = field(default_factory=list)   # in the file, not in the model: not imported
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    layout: str | None = None       # the other library's naming that was converted ("resnet18:torchvision")
    stripped_prefix: str = ""       # the wrapper prefix removed from the file's names
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every tensor of the model came from the file and every tensor of the file was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 5, *, written: bool = True) -> str:
        """Lines for a person: the format, the hash, the key report (counts and the first names), the output."""
        lines = [f"read {self.source.name} ({self.format}, sha256 {self.sha256})",
                 f"matched onto {self.target}" + (f" in the {self.layout} layout" if self.layout else "")]
        loaded = f"loaded {len(self.loaded)} tensors"
        lines.append(loaded + (f" (prefix {self.stripped_prefix!r} removed)" if self.stripped_prefix else ""))
        for what, names in (("missing from the file" + (", left as initialised" if written else ""), self.missing),
                            ("in the file but not in the model" + (", not imported" if written else ""),
                             self.unexpected)):
            if names:
                more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
                lines.append(f"{what} ({len(names)}): {', '.join(names[:limit])}{more}")
        for name, source_shape, target_shape in self.mismatched[:limit]:
            lines.append(f"shape mismatch {name}: file {list(source_shape)}, model {list(target_shape)}")
        lines.extend(f"note: {note}" for note in self.notes)
        if written:
            lines.append(f"wrote {self.path}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "source": str(self.source), "format": self.format, "sha256": self.sha256,
                "target": self.target, "layout": self.layout, "stripped_prefix": self.stripped_prefix,
                "complete": self.complete, "loaded": self.loaded, "missing": self.missing,
                "unexpected": self.unexpected,
                "mismatched": [{"name": n, "file": list(a), "model": list(b)} for n, a, b in self.mismatched],
                "notes": self.notes}

    def __str__(self) -> str:
        return self.summary()


def source_sha256(path: Path) -> str:
    """SHA-256 of a file; of a folder, the SHA-256 of its ``sha256sum``-style listing (sorted relative paths)."""
    if path.is_file():
        return _file_sha256(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    if len(files) > MAX_FOLDER_FILES:
        raise FormatError(f"{path} holds {len(files)} files; a model folder may hold at most {MAX_FOLDER_FILES}")
    listing = "".join(f"{_file_sha256(p)}  {p.relative_to(path).as_posix()}\n" for p in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def choose_reader(path: Path) -> Any:
    """The first registered reader that recognises ``path``'s content; ``FormatError`` naming what is known."""
    head = b""
    if path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
        _refuse_modelkeep(path, head)
    for reader in readers():
        try:
            if reader.sniff(path, head):
                return reader
        except (OSError, ValueError):
            continue
    known = ", ".join(r.format for r in readers())
    kind = _describe_unknown(head) if path.is_file() else "a folder without a model modelkeep knows"
    raise FormatError(f"{path} is {kind}, which modelkeep cannot import; it reads {known} "
                      "(docs/interop.md describes each)")


def _refuse_modelkeep(path: Path, head: bytes) -> None:
    from ..artifact.format import read_header
    from .pytorch import SafetensorsReader, already_modelkeep

    if SafetensorsReader().sniff(path, head):
        try:
            header = read_header(path)
        except FormatError:
            return
        if header.is_modelkeep:
            raise already_modelkeep(path)


def _describe_unknown(head: bytes) -> str:
    if not head:
        return "an empty file"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle that torch.save did not write (pickles can run code; modelkeep never loads them)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive of no known model format"
    return f"a file starting with {head[:8]!r}"


def import_model(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    spec: Any = None,
    zoo: str | None = None,
    model_class: Any = None,
    init: Mapping[str, Any] | None = None,
    trust_code: bool = False,
    layout: str | None = None,
    mapping: Mapping[str, str] | None = None,
    strict: bool = False,
    labels: list[str] | tuple[str, ...] | None = None,
    task: str | None = None,
    preprocessing: Any = None,
    postprocessing: Any = None,
    example_input: Any = None,
    limits: Any = None,
    **overrides: Any,
) -> ImportReport:
    """Import the model file (or folder) ``src`` and write it as the modelkeep file ``out``.

    The format is recognised from the content. A file that carries its architecture (Keras,
    Hugging Face) needs nothing more; weights alone (a PyTorch state dict, safetensors) need a
    target: ``spec=`` (a ``ModelSpec``, dict or spec file), ``zoo="resnet18"`` with the zoo
    model's options as keywords (``num_classes=10``), or ``model_class=`` (your ``nn.Module``
    class, built with ``init={...}``; a ``"package.module:Class"`` string is imported only with
    ``trust_code=True``). For a zoo model every known ``layout`` (torchvision, timm, Hugging Face
    names) is tried unless one is named. ``mapping={"old.prefix": "new.prefix"}`` renames the
    file's tensors first; wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``) are removed
    when that makes more tensors fit. Tensors of the model the file lacks keep their
    initialisation and are reported; with ``strict=True`` any difference raises ``FormatError``
    and nothing is written. ``labels``, ``task``, ``preprocessing``, ``postprocessing`` and
    ``example_input`` are what ``save`` takes. ``limits``: a ``ReaderLimits`` for the reader.
    """
    from ..artifact.keymap import parse_mapping
    from ..data.limits import resolve_limits
    from .target import candidate_layouts, fit_weights, resolve_target

    source = Path(src)
    if not source.exists():
        raise ModelNotFoundError(f"no such file or folder: {str(source)!r}")
    mapping = parse_mapping(mapping)
    reader = choose_reader(source)
    imported = reader.read(source, resolve_limits(limits))
    target = resolve_target(imported, spec=spec, zoo=zoo, model_class=model_class, init=init,
                            trust_code=trust_code, overrides=overrides, where=source)
    fit = fit_weights(imported.tensors, target.module.state_dict(), mapping=mapping,
                      layouts=candidate_layouts(target.zoo, layout))
    match = fit.match
    report = ImportReport(Path(out), source, imported.format, source_sha256(source), target.description,
                          match.loaded, match.missing, match.unexpected, match.mismatched, fit.layout,
                          match.stripped, list(imported.notes))
    if not match.pairs:
        raise FormatError(f"no tensor of {source} fits {target.description}; nothing was written.\n"
                          + report.summary(written=False))
    if strict and not match.complete:
        raise FormatError(f"{source} does not fit {target.description} exactly (strict); nothing was written.\n"
                          + report.summary(written=False))
    target.fill({name: fit.state[name] for name in match.pairs}, whole=not (match.missing or match.mismatched))
    record = _source_record(report, imported, mapping, source)
    _save(target, imported, out, record, labels=labels, task=task, preprocessing=preprocessing,
          postprocessing=postprocessing, example_input=example_input)
    return report


def _source_record(report: ImportReport, imported: Any, mapping: Mapping[str, str], source: Path) -> dict[str, Any]:
    from ..artifact.manifest_builder import jsonable

    record: dict[str, Any] = {"file": source.name, "sha256": report.sha256, "format": report.format,
                              "size": source.stat().st_size if source.is_file() else _folder_size(source),
                              "target": report.target}
    if imported.details:
        try:
            record["reader"] = jsonable(dict(imported.details), "reader details")
        except ConfigError:
            record["reader"] = {"note": "the reader's details were not JSON data"}
    if report.layout:
        record["layout"] = report.layout
    if mapping:
        record["mapping"] = dict(mapping)
    if report.stripped_prefix:
        record["stripped_prefix"] = report.stripped_prefix
    return record


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _save(target: Any, imported: Any, out: Any, record: dict[str, Any], *, labels: Any, task: Any,
          preprocessing: Any, postprocessing: Any, example_input: Any) -> Path:
    from ..artifact.saving import save

    return save(target.module, out, spec=target.spec, init=target.init if target.spec is None else None,
                example_input=example_input if target.spec is None else None,
                labels=labels if labels is not None else imported.labels,
                preprocessing=preprocessing if preprocessing is not None else imported.preprocessing,
                postprocessing=postprocessing if postprocessing is not None else imported.postprocessing,
                task=task or imported.task, source=record)


__all__ = ["ImportReport", "choose_reader", "import_model", "source_sha256"]

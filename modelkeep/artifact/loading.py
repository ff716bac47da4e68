"""``load`` and ``load_weights``: a model file back into a module, without running code from the file.

``load`` validates the file, asks the architecture codec to rebuild the
network (on the meta device when it can) and assigns the memory-mapped weights
to it: no weight is copied and no code named by the file runs unless the
caller allows it (``trust_code=True`` or ``model_class=``).

``load_weights`` is the partial path: weights from a file into a module the
caller already has, with a report of missing, unexpected and mismatched keys.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from ..errors import FormatError
from .codecs import codec_for
from .integrity import content_hash, read_integrity
from .manifest import read_manifest
from .model import Model
from .tensors import TensorFile


def _check_weights(path: Path, expected: Mapping[str, torch.Tensor], handle: TensorFile) -> None:
    names = set(handle.names(reserved=False))
    missing = sorted(set(expected) - names)
    unexpected = sorted(names - set(expected))
    if missing or unexpected:
        raise FormatError(
            f"{path}: weights do not match the architecture; missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, reference in expected.items():
        entry = handle.header.tensors[name]
        if tuple(entry.shape) != tuple(reference.shape):
            raise FormatError(
                f"{path}: tensor {name!r} has shape {list(entry.shape)} but the architecture needs "
                f"{list(reference.shape)}"
            )


def load(
    path: str | os.PathLike[str],
    *,
    verify: bool = True,
    device: str | torch.device | None = None,
    trust_code: bool = False,
    model_class: type | None = None,
    mmap: bool = True,
    require_signature: str | os.PathLike[str] | None = None,
) -> Model:
    """Read a modelkeep file into a ready-to-use ``Model`` (evaluation mode).

    A spec architecture is rebuilt from the data in the file. A user-defined
    class is taken from ``model_class=`` (your own class; nothing is imported)
    or, with ``trust_code=True``, imported by the name the file gives;
    otherwise ``TrustError``. ``trust_code=True`` imports the module the file
    names *before* the class is checked, and importing a module runs its
    top-level code: pass it only for files and code you trust.

    With ``mmap`` (the default) the weights are memory-mapped, not copied: fast
    and light, but the model then depends on the file: overwriting it in place
    changes the model's weights and truncating it kills the process (SIGBUS).
    ``mmap=False`` reads the weights into private memory, so nothing done to
    the file afterwards affects the model; use it in long-lived processes
    (servers). With ``verify`` (the default) the file must carry its integrity
    record and every hash of every tensor read is checked (the bytes actually
    used, with ``mmap=False``); a mismatch raises ``IntegrityError``.

    With ``require_signature`` (a public key file), ``PATH.sig`` must be an OpenSSF model-signing signature
    of the whole file by that key's pair, checked before anything else is read (``signing.verify_file``);
    an unsigned or tampered file, or one signed with another key, raises ``SignatureError``.
    """
    if require_signature is not None:
        from .signing import verify_file as verify_signature

        verify_signature(path, require_signature)
    header, manifest = read_manifest(path, verify=verify)
    path = header.path
    codec = codec_for(manifest.architecture.get("type"), path)
    rebuilt = codec.decode(manifest.architecture, where=path, trust_code=trust_code, model_class=model_class)
    module = rebuilt.module
    with TensorFile(path, verify=verify, mmap=mmap) as handle:
        expected = module.state_dict()
        _check_weights(path, expected, handle)
        state = {name: handle.tensor(name) for name in expected}
        integrity = handle.integrity
        if integrity is None:
            try:
                integrity = read_integrity(handle.header)
            except FormatError:  # the caller chose not to verify; a broken hash table only loses the content hash
                integrity = None
    module.load_state_dict(state, assign=rebuilt.on_meta, strict=True)
    if rebuilt.on_meta and any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        # A non-persistent buffer is not in the file; build the module for real and copy the weights in.
        if rebuilt.rebuild is None:
            raise FormatError(f"{path}: the architecture has state that the file does not hold")
        module = rebuilt.rebuild()
        module.load_state_dict(state, strict=True)
    if device is not None:
        module.to(device)
    module.eval()
    return Model(module=module, spec=rebuilt.spec, manifest=manifest, path=path,
                 content_hash=content_hash(header, integrity) if integrity is not None else None, verified=verify,
                 final_activation=rebuilt.final_activation, output_units=rebuilt.output_units)


@dataclass(frozen=True)
class WeightsReport:
    """What ``load_weights`` did: which tensors it loaded and which it could not, and why."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the module, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the module
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (name, file, module)
    stripped: str = ""  # the wrapper prefix removed from the file's names ("module.", ...), if any

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        removed = f" (prefix {self.stripped!r} removed)" if self.stripped else ""
        lines = [f"loaded {len(self.loaded)} tensors{removed}"]
        if self.missing:
            lines.append(f"missing from the file ({len(self.missing)}): {', '.join(self.missing[:10])}")
        if self.unexpected:
            lines.append(f"in the file but not in the module ({len(self.unexpected)}): {', '.join(self.unexpected[:10])}")
        for name, file_shape, module_shape in self.mismatched[:10]:
            lines.append(f"shape mismatch {name}: file {list(file_shape)}, module {list(module_shape)}")
        return "\n".join(lines)


def load_weights(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    verify: bool = True,
    prefix: str = "",
    mapping: Mapping[str, str] | None = None,
) -> WeightsReport:
    """Copy the weights of a model (or any safetensors) file into an existing ``module``.

    Only tensors whose name and shape match are copied; the rest is reported.
    Names are matched as ``import_model`` matches them (``keymap.match_keys``):
    ``prefix`` selects the file's tensors under it (and removes it),
    ``mapping`` (``{"old.prefix": "new.prefix"}``) renames them, and a wrapper
    prefix (``module.``, ``_orig_mod.``, ``model.``) is removed when that makes
    more tensors fit. With ``strict`` any difference raises ``FormatError`` and
    nothing is copied. No code from the file runs. With ``verify`` (the
    default) the file must carry its integrity record, as for ``load``; a plain
    safetensors file has none, so pass ``verify=False``.
    """
    from .keymap import match_keys, parse_mapping, shapes_of

    expected = shapes_of(module.state_dict())
    with TensorFile(path, verify=verify) as handle:
        selected = {name[len(prefix):]: name for name in handle.names(reserved=False) if name.startswith(prefix)}
        shapes = {name: handle.header.tensors[file_name].shape for name, file_name in selected.items()}
        match = match_keys(shapes, expected, mapping=parse_mapping(mapping))
        report = WeightsReport(match.loaded, match.missing, match.unexpected, match.mismatched, match.stripped)
        if strict and not report.complete:
            raise FormatError(f"{handle.path}: the weights do not fit the module:\n{report}")
        tensors = {name: handle.tensor(selected[source]) for name, source in match.pairs.items()}
    module.load_state_dict(tensors, strict=False)
    return report


__all__ = ["WeightsReport", "load", "load_weights"]

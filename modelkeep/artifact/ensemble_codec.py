"""The ``ensemble`` architecture: several spec architectures in one file, combined by a named method.

Document (docs/format.md, "Ensemble architectures")::

    {"type": "ensemble", "method": "soft-vote", "outputs": "probabilities", "weights": [0.5, 0.5],
     "members": [{"content_hash": "xxh3-128:...", "architecture": {"type": "spec", "spec": {...}},
                  "prefix": "members.0.", "activation": "softmax"}, ...]}

A ``stacking`` ensemble also stores its meta-model as ``meta.weight`` and
``meta.bias``. ``shared`` (optional) names member tensors that are not stored
because an identical one is: ``{"members.3.layers.body.weight":
"members.0.layers.body.weight"}``; a reference must name a tensor that is
stored (never another reference), so nothing chains, loops or is copied.

Member ``i``'s tensors are stored under ``members.<i>.<its own name>``. Each
member is decoded by the ``spec`` codec, so nothing named by the file is ever
imported; a member of any other architecture type (a user class) is refused.
torch and the spec layer are imported only inside the methods; ``describe``
never imports torch.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from ..errors import ConfigError, FormatError
from .architecture import Description, Rebuilt, stored_values
from .format import Header
from .spec_codec import SpecCodec, output_units, spec_of, spec_signature

MAX_MEMBERS = 256  # a reader bound: each member is a whole network rebuilt on the meta device
# as modelkeep.nn.ensemble.METHODS, named here without importing torch
METHODS = ("average", "weighted", "soft-vote", "majority", "stacking")
ACTIVATIONS = ("softmax", "sigmoid", "clamp", "none")
OUTPUTS = ("probabilities", "values")
_HASH = re.compile(r"^xxh3-128:[0-9a-f]{32}$")
_MEMBER_TENSOR = re.compile(r"^members\.[0-9]{1,3}\.[^\x00-\x1f]{1,1000}$")


def member_prefix(index: int) -> str:
    """Where member ``index``'s tensors live in the file: ``members.<index>.``."""
    return f"members.{index}."


def _member(entry: Any, index: int, where: object) -> tuple[dict[str, Any], str, str]:
    """``(architecture, activation, content hash)`` of one member entry, checked."""
    if not isinstance(entry, Mapping):
        raise FormatError(f"{where}: ensemble member {index} must be an object")
    architecture = entry.get("architecture")
    kind = architecture.get("type") if isinstance(architecture, Mapping) else None
    if kind == "class":
        raise FormatError(f"{where}: ensemble member {index} is a user-defined class; ensembles of this version hold "
                          "spec architectures only (nothing a file names is imported)")
    if kind != "spec":
        raise FormatError(f"{where}: ensemble member {index} has architecture type {str(kind)[:40]!r}; only 'spec' "
                          "members are supported")
    if entry.get("prefix") != member_prefix(index):
        raise FormatError(f"{where}: ensemble member {index} must have prefix {member_prefix(index)!r}, got "
                          f"{str(entry.get('prefix'))[:40]!r}")
    activation, digest = entry.get("activation"), entry.get("content_hash")
    if activation not in ACTIVATIONS:
        raise FormatError(f"{where}: ensemble member {index} has activation {str(activation)[:40]!r}; expected one "
                          f"of {', '.join(ACTIVATIONS)}")
    if not isinstance(digest, str) or not _HASH.match(digest):
        raise FormatError(f"{where}: ensemble member {index} needs a content_hash 'xxh3-128:<32 hex digits>', got "
                          f"{str(digest)[:60]!r}")
    return dict(architecture), activation, digest


def ensemble_parts(document: Mapping[str, Any], where: object) -> dict[str, Any]:
    """The checked fields of an ensemble document: method, outputs, weights and the members' parts."""
    members = document.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise FormatError(f"{where}: an ensemble needs 'members', a list of 1 to {MAX_MEMBERS} members")
    method, outputs, weights = document.get("method"), document.get("outputs", "probabilities"), document.get("weights")
    if method not in METHODS:
        raise FormatError(f"{where}: ensemble method {str(method)[:40]!r} is not known; expected one of "
                          f"{', '.join(METHODS)}")
    if outputs not in OUTPUTS:
        raise FormatError(f"{where}: ensemble outputs {str(outputs)[:40]!r}; expected one of {', '.join(OUTPUTS)}")
    if (not isinstance(weights, list) or len(weights) != len(members)
            or not all(type(w) in (int, float) and math.isfinite(w) and w >= 0 for w in weights)
            or abs(math.fsum(weights) - 1.0) > 1e-6):
        raise FormatError(f"{where}: an ensemble needs 'weights', one number >= 0 per member, summing to 1")
    parts = [_member(entry, index, where) for index, entry in enumerate(members)]
    return {"method": method, "outputs": outputs, "weights": [float(w) for w in weights], "members": parts,
            "shared": _shared(document.get("shared", {}), where)}


def _shared(shared: Any, where: object) -> dict[str, str]:
    """The ``shared`` references, checked for form (that they name tensors of the rebuilt module is checked there)."""
    if not isinstance(shared, Mapping):
        raise FormatError(f"{where}: an ensemble's 'shared' must map tensor names to tensor names")
    for alias, target in shared.items():
        if not (isinstance(target, str) and _MEMBER_TENSOR.match(alias) and _MEMBER_TENSOR.match(target)):
            raise FormatError(f"{where}: ensemble shared tensor {str(alias)[:80]!r} -> {str(target)[:80]!r} must name "
                              "two member tensors ('members.<i>.<name>')")
        if target in shared:
            raise FormatError(f"{where}: ensemble shared tensor {alias[:80]!r} refers to {target[:80]!r}, which is "
                              "itself a reference; a reference must name a stored tensor")
    return dict(shared)


class EnsembleCodec:
    """``{"type": "ensemble", ...}``: an ``modelkeep.nn.ensemble.Ensemble`` of spec-built members."""

    kind = "ensemble"

    def encode(self, model: Any, *, spec: Any = None, init: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if spec is not None or init is not None:
            raise ConfigError("an ensemble is rebuilt from its members' specs alone; pass neither spec= nor init=")
        sources = getattr(model, "sources", None)
        if not hasattr(model, "members") or not hasattr(model, "activations") or sources is None:
            raise ConfigError(f"a {type(model).__name__} is not an Ensemble with its members' content hashes; build it "
                              "with modelkeep.ensemble.ensemble()")
        members = []
        for index, (member, activation, digest) in enumerate(zip(model.members, model.activations, sources)):
            architecture = SpecCodec().encode(member)
            members.append({"content_hash": digest, "architecture": architecture, "prefix": member_prefix(index),
                            "activation": activation})
        document = {"type": "ensemble", "method": model.method, "outputs": model.outputs,
                    "weights": list(model.weights), "members": members}
        shared = model.live_shared()
        if shared:
            document["shared"] = dict(sorted(shared.items()))
        return document

    def decode(self, document: Mapping[str, Any], *, where: object, trust_code: bool = False,
               model_class: type | None = None) -> Rebuilt:
        parts = ensemble_parts(document, where)
        rebuilt = [SpecCodec().decode(architecture, where=f"{where} (ensemble member {index})")
                   for index, (architecture, _, _) in enumerate(parts["members"])]
        import torch

        from ..nn.ensemble import Ensemble

        try:
            with torch.device("meta"):
                module = Ensemble([r.module for r in rebuilt], method=parts["method"], weights=parts["weights"],
                                  activations=[a for _, a, _ in parts["members"]], outputs=parts["outputs"],
                                  sources=[d for _, _, d in parts["members"]], shared=parts["shared"])
        except ConfigError as exc:  # the file's members cannot be combined: the file is wrong, not the caller
            raise FormatError(f"{where}: the ensemble in the file is invalid: {exc}") from None
        first = rebuilt[0].spec
        final = None if parts["outputs"] == "values" else ("sigmoid" if output_units(first) == 1 else "softmax")
        return Rebuilt(module, on_meta=True, final_activation=final, output_units=output_units(first),
                       signature=spec_signature(first))

    def describe(self, document: Mapping[str, Any], header: Header) -> Description:
        from ..spec.params import count_parameters

        parts = ensemble_parts(document, header.path)
        rows: list[dict[str, Any]] = []
        members, total, trainable, buffers = [], 0, 0, 0
        for index, (architecture, activation, digest) in enumerate(parts["members"]):
            spec = spec_of(architecture, f"{header.path} (ensemble member {index})")
            report = count_parameters(spec)
            total, trainable, buffers = total + report.total, trainable + report.trainable, buffers + report.buffers
            rows += [{**row.to_dict(), "name": f"{member_prefix(index)}{row.name}"} for row in report.layers]
            members.append({"content_hash": digest, "name": spec.name, "layers": len(spec.layers),
                            "parameters": report.total, "activation": activation})
        if parts["method"] == "stacking":  # the meta-model: (members * outputs) -> outputs, plus a bias
            units = int(spec_of(parts["members"][0][0], header.path).output_shape[-1])
            meta = len(members) * units * units + units
            total, trainable = total + meta, trainable + meta
        stored = stored_values(header) + _referenced_values(parts["shared"], header)
        if stored != total + buffers:
            raise FormatError(
                f"{header.path}: the ensemble's members need {total:,} parameters and {buffers:,} buffer values but "
                f"the file stores {stored:,} values; the file is corrupt or was tampered with"
            )
        first = spec_of(parts["members"][0][0], header.path)
        summary = {"type": "ensemble", "name": f"ensemble of {len(members)}", "method": parts["method"],
                   "outputs": parts["outputs"], "weights": parts["weights"], "members": members,
                   "shared_tensors": len(parts["shared"]),
                   "input_shape": list(first.input_shape), "output_shape": list(first.output_shape)}
        return Description(summary, rows, total, trainable)


def _referenced_values(shared: Mapping[str, str], header: Header) -> int:
    """How many values the ``shared`` references stand for (each as many as the stored tensor it names)."""
    count = 0
    for alias, target in shared.items():
        entry = header.tensors.get(target)
        if entry is None or alias in header.tensors:
            raise FormatError(f"{header.path}: ensemble shared tensor {alias[:80]!r} must be absent and refer to a "
                              f"stored tensor, but {target[:80]!r} is {'absent' if entry is None else 'stored twice'}")
        count += math.prod(entry.shape)
    return count


__all__ = ["ACTIVATIONS", "EnsembleCodec", "MAX_MEMBERS", "METHODS", "OUTPUTS", "ensemble_parts", "member_prefix"]

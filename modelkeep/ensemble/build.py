"""``ensemble``: saved models in, one ensemble file out.

The members are loaded as any file is (verified, no code run), checked to be
combinable, wrapped in an ``Ensemble`` module and written with the one manifest
builder and ``write_tensors`` (atomic and durable): the members' tensors under
``members.<i>.``, their specs and content hashes in the ``ensemble``
architecture, their shared preprocessing and labels, a post-processor that
takes the ensemble's probabilities as they are, and a lineage naming every
member. Nothing is written when any check fails.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..artifact import load
from ..artifact.codecs import codec_for
from ..artifact.manifest_builder import build_manifest, manifest_metadata, provenance_record
from ..artifact.model import Model
from ..artifact.spec_codec import output_units, spec_signature
from ..artifact.tensors import write_tensors
from ..errors import ConfigError
from ..nn.ensemble import CLASSIFIER_ONLY, METHODS, Ensemble


def ensemble(files: Sequence[str | os.PathLike[str] | Model], out: str | os.PathLike[str], *,
             method: str = "soft-vote", weights: Sequence[float] | None = None, durable: bool = True,
             reproducible: bool = False) -> Path:
    """Write the ensemble of ``files`` (paths or loaded ``Model``s) to ``out``; its path.

    ``method``: ``average`` (mean of the members' probabilities, or values for
    regression), ``weighted`` (the same with ``weights``, normalised to sum to
    one), ``soft-vote`` (mean of probabilities then argmax: for classifiers the
    same as ``average``) or ``majority`` (each member votes for its class; ties
    go to the lowest class index, or to class 1 for one-output binary members).
    ``weights`` may be given with every method. Members must be spec-built, take
    the same inputs, give outputs of the same shape and carry the same task,
    labels and saved preprocessing; otherwise ``ConfigError`` and nothing is
    written.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {str(method)[:40]!r}")
    models = [item if isinstance(item, Model) else load(item) for item in files]
    if len(models) < 2:
        raise ConfigError(f"an ensemble needs at least two members; got {len(models)}")
    names = [str(m.path) if m.path is not None else f"member {i}" for i, m in enumerate(models)]
    _check_compatible(models, names)
    outputs = "values" if models[0].manifest.task == "regression" else "probabilities"
    if outputs == "values" and method in CLASSIFIER_ONLY:
        raise ConfigError(f"method {method!r} votes on classes, but these members are regression models; "
                          "use 'average' or 'weighted'")
    activations = [_activation(model, name) for model, name in zip(models, names)]
    module = Ensemble([m.module for m in models], method=method, weights=weights, activations=activations,
                      outputs=outputs, sources=[m.content_hash for m in models])
    first = models[0]
    manifest = build_manifest(
        codec_for("ensemble").encode(module), task=first.manifest.task, labels=first.manifest.labels,
        preprocessing=first.manifest.preprocessing, postprocessing=_postprocessing(outputs, first),
        signature=first.manifest.signature or spec_signature(first.spec),
        provenance=provenance_record(reproducible=reproducible), output_units=output_units(first.spec),
        lineage={"relation": "ensemble", "method": method,
                 "members": [{"content_hash": m.content_hash, "source": Path(name).name}
                             for m, name in zip(models, names)]},
        where="ensemble()",
    )
    tensors = {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
    return write_tensors(out, tensors, manifest_metadata(manifest), durable=durable)


def _check_compatible(models: list[Model], names: list[str]) -> None:
    """``ConfigError`` naming the first member that differs from the first one in what must be shared."""
    first = models[0]
    seen: dict[str, str] = {}
    for model, name in zip(models, names):
        if model.spec is None:
            kind = model.manifest.architecture.get("type")
            what = "a user-defined class" if kind == "class" else f"a {str(kind)[:40]!r} architecture"
            raise ConfigError(f"{name} is {what}; ensembles of this version hold spec-built models only")
        if model.content_hash is None:
            raise ConfigError(f"{name} records no hashes, so the ensemble cannot name it; load it with verify=True")
        if model.content_hash in seen:
            raise ConfigError(f"{name} is the same model as {seen[model.content_hash]}; give it a larger weight "
                              "instead of listing it twice")
        seen[model.content_hash] = name
        for what, mine, theirs in (("task", model.manifest.task, first.manifest.task),
                                   ("labels", model.manifest.labels, first.manifest.labels),
                                   ("saved preprocessing", model.manifest.preprocessing,
                                    first.manifest.preprocessing)):
            if mine != theirs:
                raise ConfigError(f"{name} has {what} {_short(mine)} but {names[0]} has {_short(theirs)}; ensemble "
                                  f"members must share their {what}")


def _activation(model: Model, name: str) -> str:
    """How the member's raw output becomes what its own post-processing reports."""
    post = model.postprocessor.to_dict()
    kind, given = post.get("type"), post.get("input", "logits")
    if kind == "identity":
        return "none"
    if kind == "softmax":
        return "softmax" if given == "logits" else "none"
    if kind == "sigmoid":
        if post.get("threshold", 0.5) != 0.5:
            raise ConfigError(f"{name} decides class 1 at p >= {post['threshold']}; ensembles of this version need "
                              "the default threshold 0.5")
        return "sigmoid" if given == "logits" else "clamp"
    raise ConfigError(f"{name} has {str(kind)[:40]!r} post-processing; an ensemble combines softmax, sigmoid or "
                      "identity outputs only")


def _postprocessing(outputs: str, first: Model) -> dict[str, Any]:
    """The ensemble's own post-processing: its probabilities taken as they are, or its values."""
    if outputs == "values":
        return {"type": "identity"}
    if output_units(first.spec) == 1:
        return {"type": "sigmoid", "input": "probabilities", "threshold": 0.5}
    return {"type": "softmax", "input": "probabilities"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["METHODS", "ensemble"]

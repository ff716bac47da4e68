"""``ensemble``: saved models in, one ensemble file out.

The members are loaded as any file is (verified, no code run), checked to be
combinable, wrapped in an ``Ensemble`` module and written with the one manifest
builder and ``write_tensors`` (atomic and durable): the members' tensors under
``members.<i>.``, their specs and content hashes in the ``ensemble``
architecture, their shared preprocessing and labels, a post-processor that
takes the ensemble's probabilities as they are, and a lineage naming every
member. Tensors identical between members are stored once (``sharing``); a
``stacking`` ensemble's meta-model is fitted here on the validation data given
(``stacking``). Nothing is written when any check fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from typing import Any, Sequence

from ..artifact import load
from ..artifact.codecs import codec_for
from ..artifact.manifest_builder import build_manifest, manifest_metadata, provenance_record
from ..artifact.model import Model
from ..artifact.spec_codec import output_units, spec_signature
from ..artifact.tensors import write_tensors
from ..errors import ConfigError, DataError
from ..nn.ensemble import CLASSIFIER_ONLY, METHODS, Ensemble, check_shared
from .sharing import find_shared
from .stacking import DEFAULT_PENALTY, fit_stacking

SPLITS = ("all", "train", "validation", "test")


def ensemble(files: Sequence[str | os.PathLike[str] | Model], out: str | os.PathLike[str], *,
             method: str = "soft-vote", weights: Sequence[float] | None = None, validation: Any = None,
             split: str = "all", penalty: float = DEFAULT_PENALTY, share: bool = True, durable: bool = True,
             reproducible: bool = False) -> Path:
    """Write the ensemble of ``files`` (paths or loaded ``Model``s) to ``out``; its path.

    ``method``: ``average`` (mean of the members' probabilities, or values for
    regression), ``weighted`` (the same with ``weights``, normalised to sum to
    one), ``soft-vote`` (mean of probabilities then argmax: for classifiers the
    same as ``average``) or ``majority`` (each member votes for its class; ties
    go to the lowest class index, or to class 1 for one-output binary members).
    ``stacking`` fits a meta-model (multinomial logistic regression over the
    members' concatenated probabilities; linear regression over their values)
    on ``validation``: a ``Dataset``, an ``(x, y)`` pair, or a dataset name or
    file as ``modelkeep.data.load_data`` reads it, of which ``split`` takes
    ``all`` rows or the part (``validation``, ...) that the first member's
    training run split off. Use rows the members did not train on. ``penalty``
    is its L2 strength. ``weights`` may be given with every other method.
    With ``share`` (the default) tensors identical between members are stored
    once. Members must be spec-built, take
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
    if (method == "stacking") != (validation is not None):
        raise ConfigError("method 'stacking' needs validation data (validation=, --data), and only stacking uses it")
    if method == "stacking" and weights is not None:
        raise ConfigError("method 'stacking' learns how much each member counts; give no weights")
    activations = [_activation(model, name) for model, name in zip(models, names)]
    module = Ensemble([m.module for m in models], method=method, weights=weights, activations=activations,
                      outputs=outputs, sources=[m.content_hash for m in models])
    if share:
        module.shared = check_shared(module, find_shared([m.module for m in models]))
    first = models[0]
    lineage: dict[str, Any] = {"relation": "ensemble", "method": method,
                               "members": [{"content_hash": m.content_hash, "source": Path(name).name}
                                           for m, name in zip(models, names)]}
    if method == "stacking":
        data = validation_data(validation, first, split)
        fitted = fit_stacking(module, first.preprocess(data.x), data.y, penalty=penalty)
        lineage["stacking"] = {**fitted.to_dict(), "data": data.name[:200], "split": split,
                               "data_fingerprint": data.fingerprint()}
    manifest = build_manifest(
        codec_for("ensemble").encode(module), task=first.manifest.task, labels=first.manifest.labels,
        preprocessing=first.manifest.preprocessing, postprocessing=_postprocessing(outputs, first),
        signature=first.manifest.signature or spec_signature(first.spec),
        provenance=provenance_record(reproducible=reproducible), output_units=output_units(first.spec),
        lineage=lineage, where="ensemble()",
    )
    tensors = {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
    return write_tensors(out, tensors, manifest_metadata(manifest), durable=durable)


def validation_data(validation: Any, first: Model, split: str = "all") -> Any:
    """The stacking data as a ``Dataset`` whose classes are numbered as the members' labels."""
    from ..data import Dataset, dataset_from_arrays, load_data, split_dataset
    from ..data.targets import match_labels

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {str(split)[:40]!r}")
    labels = tuple(first.labels) if first.labels is not None else None
    if isinstance(validation, (str, os.PathLike)):
        shape = first._input_shape()
        data = load_data(validation, **({"input_shape": tuple(shape)} if shape is not None else {}),
                         **({"labels": labels} if labels is not None else {}))
    elif isinstance(validation, Dataset):
        data = validation
    elif isinstance(validation, tuple) and len(validation) == 2:
        data = dataset_from_arrays(*validation, name="validation", task=first.manifest.task, labels=labels)
    else:
        raise ConfigError(f"validation must be a Dataset, an (x, y) pair, or a dataset name or file; got a "
                          f"{type(validation).__name__}")
    if data.task != first.manifest.task:
        raise DataError(f"the validation data is for {data.task} but the members do {first.manifest.task}")
    if labels is not None and data.labels is not None and tuple(data.labels) != labels:
        y, found = match_labels(np.asarray(data.y), tuple(data.labels), labels, data.name)
        data = Dataset(data.name, data.x, y, found, data.task)
    if split != "all":
        hyper = dict(first.manifest.hyperparameters or {})
        recorded = hyper.get("data") or {}
        fractions = tuple(recorded.get("split") or (0.8, 0.1, 0.1))
        parts = split_dataset(data, fractions=fractions, seed=int(recorded.get("split_seed", hyper.get("seed", 0))))
        data = {"train": parts.train, "validation": parts.validation, "test": parts.test}[split]
    return data


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

"""What ``fit`` checks before the first step: the data against the model, the loss against both.

A model, its data and its loss can each be valid and still not fit together:
samples of another width, token ids outside the vocabulary, three classes and
two output units, binary cross-entropy on three classes, cross-entropy on
real-valued targets. Each would either fail deep inside a step with a
traceback or, worse, train nothing without a word (cross-entropy over one
column is always 0). Every check here names both sides and how to fix it.

Only what the model declares is checked (a spec-built model knows its input
shape, dtype and output width; a model of the user's own class may not), and
nothing here runs the model.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .batches import input_dtype, is_streamed
from .losses import LOSSES, binary_crossentropy, categorical_crossentropy

__all__ = ["check_inputs", "check_loss_fits", "check_token_ids"]


def _vocabulary(model: Any) -> int | None:
    """The smallest vocabulary of the spec's Embedding layers (token ids must be below it), else None."""
    spec = getattr(model, "spec", None)
    sizes = [layer.kind.fields.num_embeddings
             for layer in getattr(spec, "layers", ()) if layer.kind_name == "Embedding"]
    return min(sizes) if sizes else None


def check_token_ids(x: np.ndarray, model: Any, name: str) -> None:
    """Token ids must be whole numbers in ``[0, vocabulary)``: anything else would be silently truncated
    or fail deep inside the embedding."""
    if x.size == 0 or np.asarray(x).dtype.kind not in "fiub":
        return
    values = np.asarray(x)
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise DataError(f"{name}: this model takes token ids (int64) but the data holds fractional values; "
                        "give whole numbers")
    low, high, vocabulary = float(values.min()), float(values.max()), _vocabulary(model)
    if low < 0 or (vocabulary is not None and high >= vocabulary):
        bound = f"[0, {vocabulary})" if vocabulary is not None else "0 or more"
        raise DataError(f"{name}: token ids range from {low:g} to {high:g}, but this model's vocabulary takes "
                        f"ids in {bound}; re-encode the tokens or enlarge the Embedding")


def _spec(model: Any) -> Any:
    return getattr(model, "spec", None)


def _sample_shape(dataset: Any) -> tuple[int, ...] | None:
    shape = getattr(dataset, "input_shape", None)
    return tuple(shape) if shape is not None else None


def check_inputs(model: Any, splits: dict[str, Any]) -> None:
    """Every split's samples have the model's input shape; token-id models get whole ids in their vocabulary."""
    spec = _spec(model)
    if spec is None or len(getattr(spec, "inputs", ())) != 1:
        return
    expected = tuple(spec.input_shape)
    for role, dataset in splits.items():
        if dataset is None:
            continue
        have = _sample_shape(dataset)
        if have is not None and have != expected:
            raise DataError(f"the {role} data {dataset.name!r} has samples of shape {list(have)} but the model "
                            f"expects {list(expected)}; change the model's Input shape or reshape the data")
        if input_dtype(model) == torch.int64 and not is_streamed(dataset):
            check_token_ids(dataset.x, model, f"the {role} data {dataset.name!r}")


def _output_units(model: Any, train: Any) -> int | None:
    """The width of the model's output when it is one vector per sample, else None (not checked): from
    the spec, or for a model of the user's own class from one forward pass over two training samples."""
    spec = _spec(model)
    shape = tuple(spec.output_shape) if spec is not None else _probed_output_shape(model, train)
    if shape is None:
        return None
    if len(shape) == 0:
        return 1
    return int(shape[0]) if len(shape) == 1 else None


def _probed_output_shape(model: Any, train: Any) -> tuple[int, ...] | None:
    """The per-sample output shape of ``model`` on two training samples, in eval mode and without gradients
    (every module's mode is put back; this runs before the run is seeded). None when it cannot be run."""
    parameter = next(iter(model.parameters()), None)
    if is_streamed(train) or len(train) == 0 or parameter is None or parameter.device.type == "meta":
        return None
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            x = torch.as_tensor(np.ascontiguousarray(train.x[:2]), dtype=input_dtype(model))
            out = model(x.to(parameter.device))
    except Exception:  # noqa: BLE001 - a model that cannot run on raw samples is checked by its first step
        return None
    finally:
        for module, training in modes:
            module.training = training
    return tuple(out.shape[1:]) if isinstance(out, torch.Tensor) and out.ndim >= 1 else None


def _target_width(dataset: Any) -> int:
    y = np.asarray(dataset.y)
    return int(np.prod(y.shape[1:])) if y.ndim > 1 else 1


def _classes(dataset: Any) -> tuple[int, str]:
    labels = getattr(dataset, "labels", None)
    if labels:
        shown = ", ".join(map(str, labels[:6])) + (", ..." if len(labels) > 6 else "")
        return len(labels), f"{len(labels)} classes ({shown})"
    count = int(np.asarray(dataset.y).max()) + 1 if len(dataset.y) else 0
    return count, f"{count} classes"


def _check_sequence_targets(model: Any, train: Any, name: str) -> None:
    """Per-position class targets (N, T) against a spec's sequence output (T, classes): the positions, the
    labels (one per class, as the saved file needs) and the class indices must agree."""
    spec, y = _spec(model), np.asarray(train.y)
    shape = tuple(spec.output_shape) if spec is not None else ()
    if len(shape) != 2 or y.ndim != 2:
        return
    positions, classes = int(shape[0]), int(shape[1])
    if y.shape[1] != positions:
        raise DataError(f"the targets of {name} have {y.shape[1]} positions per sample but the model gives "
                        f"{positions}; give one target per output position (shape (N, {positions}))")
    labels = getattr(train, "labels", None)
    if labels is not None and len(labels) != classes:
        raise ConfigError(f"{name} names {len(labels)} classes but the model gives {classes} per position; give "
                          f"one label per class (labels=[str(i) for i in range({classes})] for token ids)")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(f"the targets of {name} range from {int(y.min())} to {int(y.max())} but the model's "
                        f"classes are 0 to {classes - 1}; re-encode the targets or enlarge the model's output")


def check_loss_fits(model: Any, loss: str, train: Any) -> None:
    """The loss, the model's output width and the kind of target agree (raises ``ConfigError`` naming both)."""
    factory = LOSSES.get(loss)
    units, name = _output_units(model, train), f"{train.name!r}"
    classification = factory in (categorical_crossentropy, binary_crossentropy)
    if train.task == "regression":
        if classification:
            raise ConfigError(f"loss {loss!r} is for classes, but the targets of {name} are real values "
                              "(regression); use mse, mae or huber, or give class labels")
        width = _target_width(train)
        if units is not None and units != width:
            raise ConfigError(f"the model has {units} output unit(s) but the targets of {name} have {width} "
                              f"value(s) per sample; make the last layer {width} unit(s) wide")
        return
    if getattr(train, "y", None) is None:
        return
    _check_sequence_targets(model, train, name)
    count, classes = _classes(train)
    if factory is binary_crossentropy:
        if count > 2:
            raise ConfigError(f"loss {loss!r} is for two classes but {name} has {classes}; use "
                              "categorical_crossentropy")
        if units is not None and units != 1:
            raise ConfigError(f"loss {loss!r} takes one output unit (the positive class's logit) but the model has "
                              f"{units}; make the last layer 1 unit wide, or use categorical_crossentropy")
        return
    if units is None:
        return
    if factory is categorical_crossentropy and units == 1:
        raise ConfigError(f"loss {loss!r} over one output unit is always 0 (nothing would train) and {name} has "
                          f"{classes}; give the last layer {count} units, or use binary_crossentropy for two classes")
    if units != count and not (count == 2 and units == 1):
        raise ConfigError(f"the model has {units} output units but {name} has {classes}; "
                          f"make the last layer {count} units wide (zoo models: num_classes={count})")

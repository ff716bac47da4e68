"""The parity check of an export: the same inputs through the model as ``predict`` runs it and through the
exported file in onnxruntime, and the largest absolute difference of their outputs.

The reference is what ``Model.predict`` computes: the saved preprocessing applied in NumPy, then the network in
eager PyTorch; the exported graph gets the raw inputs (its preprocessing is folded in), so the check also proves
the folding. Inputs are the caller's data when given; otherwise they are generated from the signature: normal
floats in the space the network sees (mapped back through the folded preprocessing, so raw inputs look like
raw data), and token ids below the vocabulary of the Embedding that reads them. The check runs the whole batch
at once and the first row alone, so a batch axis that is not really dynamic fails here, not in production.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ._graph import Affine, evaluating
from ._source import Source, Tensor

GENERATED_ROWS = 8
MAX_CHECK_ROWS = 256  # rows of the caller's data used for the parity check (all of them count for accuracy)


@dataclass(frozen=True)
class Parity:
    """The result of one check: the largest absolute difference, the largest reference value, rows compared."""

    max_abs_diff: float
    max_abs_reference: float
    rows: int
    generated: bool

    def within(self, tolerance: float) -> bool:
        """Absolute for outputs of order one, relative for larger ones (float32 keeps ~7 digits of any value)."""
        allowed = tolerance * max(1.0, self.max_abs_reference)
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= allowed


def vocabulary(source: Source, tensor: Tensor) -> int | None:
    """The number of token ids the Embedding layers reading ``tensor`` accept (the smallest), if known.

    An ensemble has no spec of its own; its members' specs (``module.specs``) say it for each member."""
    specs = [source.spec] if source.spec is not None else list(getattr(source.module, "specs", None) or [])
    sizes = [int(layer.kind.fields.num_embeddings) for spec in specs for layer in spec.layers
             if tensor.name in layer.inputs and hasattr(layer.kind.fields, "num_embeddings")]
    return min(sizes) if sizes else None


def generated_inputs(source: Source, steps: Sequence[Affine] | None, *, rows: int = GENERATED_ROWS,
                     seed: int = 0) -> tuple[np.ndarray, ...]:
    """Inputs for the exported graph made from the signature (see the module docstring)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for index, tensor in enumerate(source.inputs):
        shape = (rows, *tensor.shape)
        if any(not isinstance(d, int) for d in tensor.shape):
            raise ConfigError(f"input {tensor.name!r} has a variable axis ({list(tensor.shape)}); pass data= so the "
                              "check has real inputs")
        if tensor.is_integer:
            vocab = vocabulary(source, tensor)
            if vocab is None:
                raise ConfigError(f"input {tensor.name!r} takes integers but no Embedding says how many ids it "
                                  "accepts; pass data= (real inputs) for the check")
            arrays.append(rng.integers(0, vocab, shape).astype(np.dtype(tensor.dtype)))
            continue
        z = rng.standard_normal(shape)
        if index == 0 and steps:
            for step in reversed(steps):
                z = step.inverse_numpy(z)
        arrays.append(z.astype(np.dtype(tensor.dtype) if tensor.dtype != "bool" else np.float32))
    return tuple(arrays)


def coerce_inputs(source: Source, x: Any) -> tuple[np.ndarray, ...]:
    """The caller's inputs as arrays of the signature's dtypes, with a batch axis (``x``: one array, a tuple
    of arrays, or a dict by input name)."""
    if isinstance(x, dict):
        missing = [t.name for t in source.inputs if t.name not in x]
        if missing:
            raise DataError(f"data= lacks the input(s) {missing}; the model takes {[t.name for t in source.inputs]}")
        x = tuple(x[t.name] for t in source.inputs)
    arrays = x if isinstance(x, (tuple, list)) else (x,)
    if len(arrays) != len(source.inputs):
        raise DataError(f"data= holds {len(arrays)} input array(s) but the model takes {len(source.inputs)}")
    out = []
    for tensor, array in zip(source.inputs, arrays):
        array = np.asarray(array)
        if tensor.is_integer and array.dtype.kind == "f":
            if not np.array_equal(array, np.round(array)):
                raise DataError(f"input {tensor.name!r} takes token ids but data= holds fractional values")
        array = array.astype(np.dtype(tensor.dtype) if tensor.dtype != "bool" else np.float32)
        sample = tuple(tensor.shape)
        if array.shape == sample:
            array = array[None]
        elif all(isinstance(d, int) for d in sample) and array.shape[1:] != sample \
                and array.ndim >= 1 and int(np.prod(array.shape[1:])) == int(np.prod(sample)):
            array = array.reshape(len(array), *sample)
        if all(isinstance(d, int) for d in sample) and array.shape[1:] != sample:
            raise DataError(f"data= input {tensor.name!r} has samples of shape {list(array.shape[1:])}; the model "
                            f"expects {list(sample)}")
        out.append(np.ascontiguousarray(array))
    if len({len(a) for a in out}) != 1 or not len(out[0]):
        raise DataError("data= inputs must hold the same number of samples, at least one")
    return tuple(out)


def network_inputs(source: Source, inputs: tuple[np.ndarray, ...], folded: bool) -> tuple[np.ndarray, ...]:
    """What the network itself receives for the exported graph's ``inputs``: predict's preprocessing applied
    to the first input when the graph folds it (otherwise the graph already takes preprocessed values)."""
    if not folded or source.preprocessing is None:
        return inputs
    return (np.asarray(source.preprocessing.transform(inputs[0]), dtype=np.float32), *inputs[1:])


@torch.no_grad()
def reference_outputs(source: Source, inputs: tuple[np.ndarray, ...], probabilities: Any,
                      batch_size: int = 256) -> list[np.ndarray]:
    """The network's outputs in eager PyTorch (and the probabilities head's), batch by batch."""
    module = source.module
    device = next(iter(module.parameters()), torch.empty(0)).device
    chunks: list[list[np.ndarray]] = []
    with evaluating(module):
        for start in range(0, len(inputs[0]), batch_size):
            batch = [torch.from_numpy(np.ascontiguousarray(a[start:start + batch_size])).to(device) for a in inputs]
            out = module(*batch)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            if probabilities is not None:
                outs.append(probabilities(outs[0]))
            chunks.append([o.detach().float().cpu().numpy() for o in outs])
    return [np.concatenate(parts) for parts in zip(*chunks)]


def session(model_bytes: bytes):
    """An onnxruntime CPU session on a serialized model."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: a session's warnings are not the user's business
    return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run_session(runner: Any, inputs: tuple[np.ndarray, ...], *, batch_size: int = 256) -> list[np.ndarray]:
    """Every output of the session on ``inputs``, in batches of ``batch_size`` rows."""
    names = [item.name for item in runner.get_inputs()]
    chunks = []
    for start in range(0, len(inputs[0]), batch_size):
        feed = {name: np.ascontiguousarray(a[start:start + batch_size]) for name, a in zip(names, inputs)}
        chunks.append(runner.run(None, feed))
    return [np.concatenate(parts) for parts in zip(*chunks)]


def max_abs_diff(expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
    if len(expected) != len(actual):
        return float("inf")
    worst = 0.0
    for a, b in zip(expected, actual):
        if a.shape != b.shape:
            return float("inf")
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return worst


def check(source: Source, model_bytes: bytes, graph_inputs: tuple[np.ndarray, ...], *, folded: bool,
          probabilities: Any, dynamic_batch: bool, generated: bool) -> Parity:
    """Run both sides on ``graph_inputs`` (all rows at once, then the first row alone) and compare."""
    graph_inputs = tuple(a[:MAX_CHECK_ROWS] for a in graph_inputs)
    expected = reference_outputs(source, network_inputs(source, graph_inputs, folded), probabilities)
    runner = session(model_bytes)
    actual = run_session(runner, graph_inputs, batch_size=256 if dynamic_batch else 1)
    worst = max_abs_diff(expected, actual)
    if dynamic_batch and len(graph_inputs[0]) > 1:
        single = run_session(runner, tuple(a[:1] for a in graph_inputs))
        worst = max(worst, max_abs_diff([e[:1] for e in expected], single))
    largest = max((float(np.max(np.abs(e))) for e in expected if e.size), default=0.0)
    return Parity(worst, largest, len(graph_inputs[0]), generated)


__all__ = ["GENERATED_ROWS", "MAX_CHECK_ROWS", "Parity", "check", "coerce_inputs", "generated_inputs",
           "max_abs_diff", "network_inputs", "reference_outputs", "run_session", "session", "vocabulary"]

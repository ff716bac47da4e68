"""``export_onnx``: a modelkeep model as one ONNX file, checked in onnxruntime before it is written.

The exporter is PyTorch's ``torch.export``-based one (``torch.onnx.export(..., dynamo=True)``, translated by
onnxscript). The older TorchScript exporter (``dynamo=False``) is faster to run but deprecated since PyTorch
2.9, and it cannot express every op the zoo uses: VGG and AlexNet at small input sizes fail with "adaptive_avg_
pool2d, output size that are not factor of input size". The dynamo exporter exports every zoo model.

What the file holds:

* inputs named as the model's signature names them (``tokens``, ``input``...), of its dtypes, with a dynamic
  batch axis ``batch`` (``dynamic_batch=False``: fixed at one row);
* the saved preprocessing folded in when it is affine (``_graph``), so the file takes the raw inputs ``predict``
  takes; otherwise the graph takes preprocessed inputs and ``metadata_props`` say so;
* the network's raw outputs (logits), named as the signature names them. Post-processing is not baked in by
  default: the file records it (``modelkeep.postprocessing``, ``modelkeep.labels``), and ``probabilities=True``
  adds a second output, ``probabilities``, equal to what ``predict`` reports;
* ``metadata_props`` under ``modelkeep.*``: the source's name, file and content hash, the task, labels, pre- and
  post-processing as JSON, and whether the preprocessing is folded.

Nothing is written until the file has passed the parity check (``parity``) and, when asked, been quantized;
then it is written atomically, so a failed export leaves no file behind.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import ConfigError, ExportError
from . import parity
from ._graph import ExportGraph, affine_steps, evaluating, feature_steps, probabilities_head
from ._source import Source, resolve_source

# float32 kernels differ between PyTorch and onnxruntime (fused GEMMs, other summation orders): on the zoo the
# differences are 1e-8 to 5e-6 on outputs of order one. 1e-4 leaves twenty times that for deeper networks and
# still catches every real mistake (a wrong layout, a missing preprocessing step, a wrong op: 1e-2 and more).
# Outputs larger than one are compared relative to their size (see parity.Parity.within).
DEFAULT_TOLERANCE = 1e-4
MAX_PROTO_BYTES = 2**31 - 2**20  # protobuf cannot serialize a message of 2 GiB or more
QUANTIZE_CHOICES = ("int8",)


@dataclass(frozen=True)
class OnnxExport:
    """What ``export_onnx`` wrote and measured."""

    path: Path
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_batch: bool
    preprocessing_folded: bool | None  # None: the model has no input preprocessing
    max_abs_diff: float | None  # None: not checked (check=False)
    tolerance: float
    check_rows: int
    check_inputs: str  # "data" or "generated"
    size_bytes: int
    quantization: Any = None  # a quantize.QuantizationReport when quantize="int8"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": "onnx", "opset": self.opset, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "dynamic_batch": self.dynamic_batch,
                "preprocessing_folded": self.preprocessing_folded, "max_abs_diff": self.max_abs_diff,
                "tolerance": self.tolerance, "check_rows": self.check_rows, "check_inputs": self.check_inputs,
                "size_bytes": self.size_bytes,
                "quantization": self.quantization.to_dict() if self.quantization is not None else None,
                "notes": list(self.notes)}

    def summary(self) -> list[str]:
        """Lines for a person: what was written and how well it matches."""
        lines = [f"wrote {self.path} (ONNX opset {self.opset}, {self.size_bytes:,} bytes; inputs "
                 f"{', '.join(self.inputs)}; outputs {', '.join(self.outputs)})"]
        if self.max_abs_diff is None:
            lines.append("parity not checked (--no-check)")
        else:
            lines.append(f"parity in onnxruntime on {self.check_rows} {self.check_inputs} rows: max abs diff "
                         f"{self.max_abs_diff:.3g} (tolerance {self.tolerance:g})")
        if self.quantization is not None:
            lines.extend(self.quantization.summary())
        lines.extend(self.notes)
        return lines


def export_onnx(model_or_path: Any, out: str | os.PathLike[str], *, opset: int | None = None,
                dynamic_batch: bool = True, check: bool = True, tolerance: float = DEFAULT_TOLERANCE,
                data: Any = None, quantize: str | None = None, probabilities: bool = False,
                trust_code: bool = False) -> OnnxExport:
    """Export a model (a modelkeep file, a loaded ``Model``, a ``FitResult`` or a built module) to ONNX at ``out``.

    ``data`` (an array of inputs, ``(x, y)``, a ``Dataset``, or a dataset name or file that ``modelkeep
    evaluate --data`` reads) gives real inputs to the parity check and, with targets, the accuracy of the
    quantized model; without it, inputs are generated from the signature. The export fails with
    ``ExportError`` (and writes nothing) when onnxruntime's outputs differ from the model's by more than
    ``tolerance``. ``quantize="int8"`` writes an int8 model (see ``modelkeep.export.quantize``).
    """
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ConfigError(f"quantize must be one of {list(QUANTIZE_CHOICES)} or None, got {quantize!r}")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ConfigError(f"tolerance must be a number >= 0, got {tolerance!r}")
    x, y = _data_arrays(data)
    source = resolve_source(model_or_path, trust_code=trust_code, example=None if isinstance(x, str) else x)
    if isinstance(x, str):
        x, y = _read_data(x, source)
    folded, notes = _folding(source)
    steps = (affine_steps(source.preprocessing) or []) if folded else []
    head = _probabilities(source, probabilities)
    inputs = parity.coerce_inputs(source, x) if x is not None else parity.generated_inputs(source, steps)
    graph = ExportGraph(source.module, steps, head)
    names = _names(source, head is not None)
    proto = _export(graph, inputs, names, opset=opset, dynamic_batch=dynamic_batch, where=source.name)
    _record(proto, source, folded, head is not None)
    model_bytes = _serialized(proto, source.name)
    measured = None
    if check:
        measured = parity.check(source, model_bytes, inputs, folded=bool(folded), probabilities=head,
                                dynamic_batch=dynamic_batch, generated=x is None)
        if not measured.within(tolerance):
            raise ExportError(
                f"the ONNX export of {source.name} does not match the model: max abs diff {measured.max_abs_diff:.3g} "
                f"in onnxruntime on {measured.rows} rows (largest output {measured.max_abs_reference:.3g}, tolerance "
                f"{tolerance:g}); nothing was written. Raise the tolerance only if the difference is expected")
    report = None
    if quantize == "int8":
        from .quantize import quantize_int8

        model_bytes, report = quantize_int8(model_bytes, source, inputs, y)
    path = _write(out, model_bytes)
    return OnnxExport(path, _opset(proto), tuple(names[0]), tuple(names[1]), dynamic_batch, folded,
                      measured.max_abs_diff if measured else None, float(tolerance), measured.rows if measured else 0,
                      "generated" if x is None else "data", len(model_bytes), report, tuple(notes))


def _data_arrays(data: Any) -> tuple[Any, Any]:
    """``(x, y)`` from what the caller gave; a name or path stays a string until the model is known."""
    if data is None:
        return None, None
    if isinstance(data, (str, os.PathLike)):
        return str(data), None
    if hasattr(data, "x") and hasattr(data, "y"):  # a modelkeep Dataset: its classes by name, in its own order
        labels = getattr(data, "labels", None)
        if labels is not None and np.asarray(data.y).dtype.kind in "iu":
            return data.x, np.asarray(labels, dtype=object)[np.asarray(data.y)]
        return data.x, data.y
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], (int, float)):
        return data
    return data, None


def _read_data(source_name: str, source: Source) -> tuple[np.ndarray, np.ndarray]:
    """A dataset name or file read as ``modelkeep evaluate`` reads it: shaped for the model, classes matched by name."""
    from ..data.datasets import load_data

    options: dict[str, Any] = {}
    if len(source.inputs) == 1 and all(isinstance(d, int) for d in source.inputs[0].shape):
        options["input_shape"] = tuple(source.inputs[0].shape)
    if source.labels is not None:
        options["labels"] = tuple(source.labels)
    dataset = load_data(source_name, **options)
    return dataset.x, dataset.y


def _folding(source: Source) -> tuple[bool | None, list[str]]:
    """Whether the input preprocessing is folded (``None``: there is none), and what the export should say."""
    if not feature_steps(source.preprocessing):
        return None, []
    if len(source.inputs) == 1 and affine_steps(source.preprocessing) is not None:
        return True, []
    kinds = ", ".join(type(step).__name__ for step in feature_steps(source.preprocessing))
    return False, [f"the preprocessing ({kinds}) could not be folded into the graph: the ONNX model takes what it "
                   "produces (token ids, for a tokenizer); metadata_props['modelkeep.preprocessing'] records it"]


def _probabilities(source: Source, wanted: bool) -> Any:
    if not wanted:
        return None
    if len(source.outputs) != 1:
        raise ConfigError("probabilities=True needs a network with one output")
    head = probabilities_head(source.postprocessor)
    if head is None:
        raise ConfigError(f"{source.name} has no class probabilities to add (its post-processing is "
                          f"{getattr(source.postprocessor, 'type', 'unknown')}); export it without probabilities")
    return head


def _names(source: Source, with_probabilities: bool) -> tuple[list[str], list[str]]:
    """Input and output names from the signature, unique across both lists."""
    taken: set[str] = set()

    def unique(name: str) -> str:
        candidate, index = name, 1
        while candidate in taken:
            candidate, index = f"{name}_{index}", index + 1
        taken.add(candidate)
        return candidate

    inputs = [unique(t.name) for t in source.inputs]
    outputs = [unique(t.name) for t in source.outputs]
    if with_probabilities:
        outputs.append(unique("probabilities"))
    return inputs, outputs


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs a warning for each torchvision op it cannot register when torchvision is absent, and
    warns about its own internals (deprecations, LSTM weights): none is the concern of the user exporting."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # the exporter's deprecation notices are PyTorch's, not the user's
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export(graph: ExportGraph, inputs: tuple[np.ndarray, ...], names: tuple[list[str], list[str]], *,
            opset: int | None, dynamic_batch: bool, where: str) -> Any:
    """The ONNX ``ModelProto`` of ``graph``, traced on two rows of ``inputs`` (one for a fixed batch)."""
    rows = 2 if dynamic_batch else 1  # a batch of one would be specialized by torch.export
    device = next(iter(graph.parameters()), torch.empty(0)).device
    example = tuple(torch.from_numpy(np.ascontiguousarray(np.resize(a, (rows, *a.shape[1:])))).to(device)
                    for a in inputs)
    dynamic = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic = (tuple({0: batch} for _ in example),)
    try:
        with _quiet_exporter(), evaluating(graph):
            program = torch.onnx.export(graph, example, None, dynamo=True, input_names=names[0],
                                        output_names=names[1], opset_version=opset, dynamic_shapes=dynamic,
                                        optimize=True, verbose=False, external_data=False)
            proto = program.model_proto
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; each is a failed export
        message = " ".join(str(exc).split())[:400]
        advice = " (try dynamic_batch=False / --static-batch)" if dynamic_batch and "batch" in message else ""
        raise ExportError(f"PyTorch could not export {where} to ONNX{advice}: {type(exc).__name__}: "
                          f"{message}") from None
    if dynamic_batch:
        for value in (*proto.graph.input, *proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto


def _record(proto: Any, source: Source, folded: bool | None, with_probabilities: bool) -> None:
    """The ``modelkeep.*`` metadata_props (see the module docstring)."""
    from .._version import __version__

    post = source.postprocessor.to_dict() if source.postprocessor is not None else None
    pre = source.preprocessing.to_dict() if source.preprocessing is not None else None
    facts = {"modelkeep.version": __version__, "modelkeep.task": source.task or "",
             "modelkeep.labels": json.dumps(list(source.labels) if source.labels is not None else None),
             "modelkeep.postprocessing": json.dumps(post), "modelkeep.preprocessing": json.dumps(pre),
             "modelkeep.preprocessing_folded": {None: "none", True: "true", False: "false"}[folded],
             "modelkeep.outputs": ("raw network outputs (logits); apply modelkeep.postprocessing for answers"
                                   + ("; 'probabilities' is what modelkeep's predict reports" if with_probabilities
                                      else ""))}
    facts.update({f"modelkeep.source.{key}": value for key, value in source.facts.items()})
    for key, value in facts.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"{source.name}, exported by modelkeep {__version__}"


def _serialized(proto: Any, where: str) -> bytes:
    import onnx

    if proto.ByteSize() > MAX_PROTO_BYTES:
        raise ExportError(f"{where} needs {proto.ByteSize():,} bytes as ONNX, more than the 2 GiB one ONNX file can "
                          "hold without external data; export a smaller model")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model of {where} is invalid: {str(exc).splitlines()[0][:300]}") from None
    return proto.SerializeToString()


def _opset(proto: Any) -> int:
    return next((int(entry.version) for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), 0)


def _write(out: str | os.PathLike[str], model_bytes: bytes) -> Path:
    from ..io.atomic import atomic_write_bytes

    return Path(atomic_write_bytes(out, model_bytes))


__all__ = ["DEFAULT_TOLERANCE", "OnnxExport", "export_onnx"]

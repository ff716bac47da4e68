"""``export_triton``: a modelkeep model as one model of a Triton / KServe model repository.

``OUT_DIR`` is the model repository (``tritonserver --model-repository=OUT_DIR``); it may hold other models.
The export writes one model folder in it::

    OUT_DIR/<name>/config.pbtxt          Triton's ModelConfig in protobuf text format
    OUT_DIR/<name>/labels.txt            the class names, one a line (only for a model with class names)
    OUT_DIR/<name>/<version>/model.onnx  ``export_onnx``'s file, with the ``probabilities`` output for a classifier

The ONNX file is made and checked in onnxruntime (``export_onnx``) before anything is written under ``OUT_DIR``: a
model whose export fails the parity check raises ``ExportError`` and leaves ``OUT_DIR`` as it was. The config is
derived from the ONNX file itself (names, data types, dims), so it cannot disagree with it: the inputs and outputs
are those ``modelkeep serve`` lists in its V2 metadata, under the same names, so a V2 client keeps working when a
model moves from ``modelkeep serve`` to Triton.

This module never opens a destination for writing except through ``modelkeep.io``. ``io`` has no folder commit
yet, so the folder is written file by file, each file atomically and ``config.pbtxt`` last; a crash mid-write
leaves complete files only, and the folder refused a second time only if something else was put in it.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExportError
from .onnx import DEFAULT_TOLERANCE, OnnxExport

CONFIG_FILE, LABELS_FILE, MODEL_FILE = "config.pbtxt", "labels.txt", "model.onnx"
# 0 (no wait) is Triton's own default and modelkeep serve's --max-queue-delay-us default, so a model batches alike
# in both: requests that queue while a batch runs still form the next batch; raise it only where throughput
# under load matters more than one client's latency (docs/serving.md has the measured trade).
DEFAULT_QUEUE_DELAY_US = 0
DEFAULT_MAX_BATCH_SIZE = 32  # as modelkeep serve's --max-batch-size
KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")
MAX_INT32 = 2**31 - 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# ONNX TensorProto element types (onnx.TensorProto.DataType) -> Triton's DataType names (model_config.proto)
_DATA_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
               6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16",
               11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}


@dataclass(frozen=True)
class TritonSettings:
    """What ``config.pbtxt`` says beside the tensors: the version folder, batching and instances; checked when made
    (``ConfigError`` saying what was received). ``kind`` may be given as ``cpu``, ``gpu`` or ``auto``."""

    version: int = 1
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    preferred_batch_sizes: tuple[int, ...] = ()
    instance_count: int = 1
    kind: str = "KIND_CPU"

    def __post_init__(self) -> None:
        for label, least in (("version", 1), ("max_batch_size", 0), ("max_queue_delay_us", 0),
                             ("instance_count", 1)):
            _whole(getattr(self, label), label, least)
        sizes = tuple(_whole(size, "each preferred batch size", 1) for size in (self.preferred_batch_sizes or ()))
        if sizes and self.max_batch_size == 0:
            raise ConfigError("preferred batch sizes need batching: give max_batch_size > 0 (or no preferred sizes)")
        if any(size > self.max_batch_size for size in sizes):
            raise ConfigError(f"preferred batch sizes {list(sizes)} must be at most max_batch_size "
                              f"({self.max_batch_size})")
        kind = str(self.kind).upper()
        kind = kind if kind.startswith("KIND_") else f"KIND_{kind}"
        if kind not in KINDS:
            raise ConfigError(f"kind must be one of {list(KINDS)} (or cpu, gpu, auto), got {self.kind!r}")
        object.__setattr__(self, "preferred_batch_sizes", tuple(sorted(set(sizes))))
        object.__setattr__(self, "kind", kind)


def _whole(value: Any, label: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_INT32:
        raise ConfigError(f"{label} must be a whole number from {least} to {MAX_INT32}, got {value!r}")
    return value


@dataclass(frozen=True)
class TritonTensor:
    """One input or output as the config declares it: ``dims`` without the batch axis when Triton batches."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    label_filename: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data_type": self.data_type, "dims": list(self.dims),
                "label_filename": self.label_filename}


@dataclass(frozen=True)
class TritonExport:
    """What ``export_triton`` wrote: the model folder, its files, the config's tensors and the ONNX export."""

    folder: Path
    name: str
    settings: TritonSettings
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    onnx: OnnxExport
    labels_path: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def version(self) -> int:
        return self.settings.version

    @property
    def max_batch_size(self) -> int:
        return self.settings.max_batch_size

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def model_path(self) -> Path:
        return self.folder / str(self.version) / MODEL_FILE

    def to_dict(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        settings["preferred_batch_sizes"] = list(self.settings.preferred_batch_sizes)
        return {"format": "triton", "path": str(self.folder), "name": self.name, **settings,
                "config": str(self.config_path), "model": str(self.model_path),
                "labels": str(self.labels_path) if self.labels_path else None,
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "onnx": self.onnx.to_dict(), "notes": list(self.notes)}

    def summary(self) -> list[str]:
        """Lines for a person: the folder, the config's tensors, and the ONNX export's own lines."""
        tensors = "; ".join(f"{t.name} {t.data_type} {list(t.dims)}" for t in (*self.inputs, *self.outputs))
        lines = [f"wrote {self.folder} (Triton model {self.name!r}, version {self.version}, max_batch_size "
                 f"{self.max_batch_size}; {tensors})"]
        return lines + self.onnx.summary() + list(self.notes)


def export_triton(model_or_path: Any, out_dir: str | os.PathLike[str], *, name: str | None = None,
                  version: int = 1, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                  max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                  preferred_batch_sizes: Any = None, instance_count: int = 1, kind: str = "KIND_CPU",
                  opset: int | None = None, tolerance: float = DEFAULT_TOLERANCE, data: Any = None,
                  quantize: str | None = None, trust_code: bool = False) -> TritonExport:
    """Write ``model_or_path`` (a modelkeep file, a loaded ``Model`` or a ``FitResult``) as the model ``name`` of
    the Triton model repository ``out_dir``; returns what was written.

    ``name`` defaults to the file's stem. ``max_batch_size`` > 0 lets Triton batch (the config's dims then leave
    out the batch axis) with ``dynamic_batching``: requests wait up to ``max_queue_delay_us`` for others, and
    ``preferred_batch_sizes`` are the sizes it aims for; ``0`` turns batching off. ``instance_count`` copies of
    the model run on ``kind`` (``KIND_CPU``, ``KIND_GPU``, ``KIND_AUTO``). ``opset``, ``tolerance``, ``data``,
    ``quantize`` and ``trust_code`` are ``export_onnx``'s; the parity check always runs.
    """
    settings = TritonSettings(version, max_batch_size, max_queue_delay_us, tuple(preferred_batch_sizes or ()),
                              instance_count, kind)
    model = _loaded(model_or_path, trust_code)
    source = _source(model, data, trust_code)
    name = _model_name(name, model, source)
    folder = Path(out_dir) / name
    _check_folder(Path(out_dir), folder, settings.version)
    labels = _labels(source)
    probabilities = _has_probabilities(source)
    exported, model_bytes = _onnx_bytes(model, opset=opset, tolerance=tolerance, data=data, quantize=quantize,
                                        probabilities=probabilities, trust_code=trust_code)
    inputs, outputs = _tensors(model_bytes, settings.max_batch_size, labels)
    facts = {**source.facts, **({"task": source.task} if source.task else {})}
    text = config_text(name, inputs, outputs, settings, facts=facts)
    labels_path = _write(folder, settings.version, model_bytes, labels if _references_labels(outputs) else None, text)
    notes = () if probabilities or source.labels is None else (
        "no probabilities output: the post-processing has none to add; clients get the raw outputs",)
    return TritonExport(folder, name, settings, inputs, outputs,
                        replace(exported, path=folder / str(settings.version) / MODEL_FILE), labels_path, notes)


def _loaded(model_or_path: Any, trust_code: bool) -> Any:
    """A file is loaded once, here: the name, labels and export all come from the same ``Model``."""
    if isinstance(model_or_path, (str, os.PathLike)):
        from ..artifact import load

        return load(Path(model_or_path), trust_code=trust_code)
    return model_or_path


def _source(model: Any, data: Any, trust_code: bool) -> Any:
    from ._source import resolve_source

    example = data[0] if isinstance(data, tuple) else getattr(data, "x", data)  # for a module without a spec
    if isinstance(example, (str, os.PathLike)):
        example = None
    return resolve_source(model, trust_code=trust_code, example=example)


def _model_name(name: str | None, model: Any, source: Any) -> str:
    """``name`` checked, or one made from the file's stem (the spec's name without a file)."""
    if name is not None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"a Triton model name must be 1-128 letters, digits, '_', '.' or '-', starting with a "
                              f"letter or digit (it names a folder and the URL /v2/models/NAME); got {name!r}")
        return name
    path = getattr(model, "path", None)
    stem = Path(path).name.split(".")[0] if path is not None else source.name
    made = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.-")[:128]
    return made if made and _NAME.fullmatch(made) else "model"


def _check_folder(out_dir: Path, folder: Path, version: int) -> None:
    """Refuse a repository that is a file, or a model folder holding anything an earlier export would not."""
    for path in (out_dir, folder, folder / str(version)):
        if path.exists() and not path.is_dir():
            raise ExportError(f"{path} is a file; --format triton writes the folders of a model repository there "
                              "(give another OUT_DIR or --name)")
    if not folder.is_dir():
        return
    strangers = []
    for entry in folder.iterdir():
        if entry.name in (CONFIG_FILE, LABELS_FILE) or entry.name.startswith("."):
            continue
        if entry.name == str(version):
            strangers += [f"{entry.name}/{e.name}" for e in entry.iterdir()
                          if e.name != MODEL_FILE and not e.name.startswith(".")]
        elif not (entry.is_dir() and entry.name.isdigit()):  # other versions stay: Triton may serve them
            strangers.append(entry.name)
    if strangers:
        shown = ", ".join(sorted(strangers)[:5]) + (f" (+{len(strangers) - 5} more)" if len(strangers) > 5 else "")
        raise ExportError(f"{folder} already holds files an export does not write ({shown}); give another --name or "
                          "an empty OUT_DIR")


def _has_probabilities(source: Any) -> bool:
    """Whether the export adds ``probabilities``: a one-output classifier, as ``modelkeep serve`` lists it."""
    from ._graph import probabilities_head

    return len(source.outputs) == 1 and probabilities_head(source.postprocessor) is not None


def _onnx_bytes(model: Any, **options: Any) -> tuple[OnnxExport, bytes]:
    """``export_onnx`` run into a scratch folder: nothing under OUT_DIR exists until its parity check passed."""
    from .onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="modelkeep-triton-") as scratch:
        exported = export_onnx(model, Path(scratch) / MODEL_FILE, check=True, **options)
        return exported, exported.path.read_bytes()


def _labels(source: Any) -> tuple[str, ...] | None:
    labels = tuple(str(label) for label in source.labels) if source.labels is not None else None
    if labels and any(("\n" in label or "\r" in label) for label in labels):
        raise ExportError("a class name holds a line break, which Triton's label file (one name a line) cannot "
                          "hold; re-save the model with save(..., labels=[...]) naming each class on one line")
    return labels or None


def _tensors(model_bytes: bytes, max_batch_size: int, labels: tuple[str, ...] | None
             ) -> tuple[tuple[TritonTensor, ...], tuple[TritonTensor, ...]]:
    """The config's inputs and outputs, read from the ONNX graph they describe."""
    import onnx

    graph = onnx.load_from_string(model_bytes).graph
    initializers = {init.name for init in graph.initializer}

    def tensor(value: Any, is_output: bool) -> TritonTensor:
        kind = value.type.tensor_type
        if kind.elem_type not in _DATA_TYPES:
            raise ExportError(f"the ONNX {value.name!r} has element type {kind.elem_type}, which Triton has no "
                              "data type for")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim)
        if max_batch_size > 0:
            dims = dims[1:]
        label_file = LABELS_FILE if is_output and labels and dims == (len(labels),) else None
        return TritonTensor(value.name, _DATA_TYPES[kind.elem_type], dims, label_file)

    inputs = tuple(tensor(v, False) for v in graph.input if v.name not in initializers)
    return inputs, tuple(tensor(v, True) for v in graph.output)


def _references_labels(outputs: tuple[TritonTensor, ...]) -> bool:
    return any(t.label_filename for t in outputs)


def _quoted(text: str) -> str:
    """A protobuf text-format string: ASCII kept, quotes and backslashes escaped, other bytes as octal escapes."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensor_block(tensor: TritonTensor) -> list[str]:
    # A per-row scalar ([batch] in ONNX) has no dims left: Triton wants [1], reshaped to [] for the model.
    dims = ", ".join(str(d) for d in tensor.dims) if tensor.dims else "1"
    lines = ["  {", f"    name: {_quoted(tensor.name)}", f"    data_type: {tensor.data_type}", f"    dims: [ {dims} ]"]
    if not tensor.dims:
        lines.append("    reshape: { shape: [ ] }")
    if tensor.label_filename:
        lines.append(f"    label_filename: {_quoted(tensor.label_filename)}")
    return lines + ["  }"]


def config_text(name: str, inputs: tuple[TritonTensor, ...], outputs: tuple[TritonTensor, ...],
                settings: TritonSettings, *, facts: dict[str, str] | None = None) -> str:
    """``config.pbtxt``: Triton's ``ModelConfig`` in protobuf text format (see the module docstring)."""
    from .._version import __version__

    def listed(blocks: list[list[str]]) -> list[str]:
        joined: list[str] = []
        for index, block in enumerate(blocks):
            joined += block[:-1] + [block[-1] + ("," if index < len(blocks) - 1 else "")]
        return joined

    lines = [f"# written by modelkeep {__version__}; inputs and outputs as in {settings.version}/{MODEL_FILE}",
             f"name: {_quoted(name)}", 'platform: "onnxruntime_onnx"', f"max_batch_size: {settings.max_batch_size}",
             "input ["] + listed([_tensor_block(t) for t in inputs]) + ["]", "output ["]
    lines += listed([_tensor_block(t) for t in outputs]) + ["]"]
    if settings.max_batch_size > 0:
        lines.append("dynamic_batching {")
        if settings.preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(str(s) for s in settings.preferred_batch_sizes)} ]")
        lines += [f"  max_queue_delay_microseconds: {settings.max_queue_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {settings.instance_count}", f"    kind: {settings.kind}", "  }",
              "]"]
    for key, value in sorted((facts or {}).items()):  # where the model came from, shown by GET .../config
        lines.append(f"parameters {{ key: {_quoted('modelkeep.' + key)} value: {{ string_value: {_quoted(value)} }} }}")
    return "\n".join(lines) + "\n"


def _write(folder: Path, version: int, model_bytes: bytes, labels: tuple[str, ...] | None, text: str) -> Path | None:
    """The model folder, file by file through ``modelkeep.io``: the model, the labels, then the config."""
    from ..io.committer import RenameCommitter

    committer = RenameCommitter(folder)
    with committer.writing(f"{version}/{MODEL_FILE}") as handle:
        handle.write(model_bytes)
    if labels is None:
        committer.delete(LABELS_FILE)  # an earlier export's class names would describe another model
    else:
        with committer.writing(LABELS_FILE) as handle:
            handle.write(("\n".join(labels) + "\n").encode("utf-8"))
    with committer.writing(CONFIG_FILE) as handle:
        handle.write(text.encode("utf-8"))
    return committer.path(LABELS_FILE) if labels is not None else None


__all__ = ["DEFAULT_MAX_BATCH_SIZE", "DEFAULT_QUEUE_DELAY_US", "KINDS", "TritonExport", "TritonSettings",
           "TritonTensor", "config_text", "export_triton"]

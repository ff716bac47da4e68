"""int8 quantization of an exported ONNX model with onnxruntime's quantization tools, and what it cost.

Method: a network with convolutions, given real data, is quantized statically (QDQ, per-channel int8
weights, activation ranges calibrated on up to ``CALIBRATION_ROWS`` rows of that data): dynamic quantization
of convolutions (``ConvInteger``) re-measures every activation's range at run time and is both slower and
less accurate there. Everything else, and any network without calibration data, is quantized dynamically
(int8 weights for MatMul/Gemm, LSTM/GRU and attention, activations quantized on the fly), which needs no data.

The report gives the size before and after, the largest difference from the float model on the check
inputs and, given targets, the accuracy (classification, per position for a sequence output) or the mean
absolute error (regression) of both, each computed in onnxruntime with the model's saved post-processing.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ExportError
from . import parity
from ._source import Source

CALIBRATION_ROWS = 128
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class QuantizationReport:
    method: str  # "dynamic" or "static"
    float_bytes: int
    int8_bytes: int
    max_abs_diff: float  # int8 against float, on the check inputs
    metric: str | None = None  # "accuracy" or "mae", when targets were given
    float_metric: float | None = None
    int8_metric: float | None = None
    samples: int = 0

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.float_bytes if self.float_bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "float_bytes": self.float_bytes, "int8_bytes": self.int8_bytes,
                "size_ratio": self.size_ratio, "max_abs_diff_vs_float": self.max_abs_diff, "metric": self.metric,
                "float_metric": self.float_metric, "int8_metric": self.int8_metric,
                "metric_change": (self.int8_metric - self.float_metric) if self.metric else None,
                "samples": self.samples}

    def summary(self) -> list[str]:
        lines = [f"int8 ({self.method} quantization): {self.float_bytes:,} -> {self.int8_bytes:,} bytes "
                 f"({self.size_ratio:.1%} of float); max abs diff from float {self.max_abs_diff:.3g}"]
        if self.metric is not None:
            lines.append(f"{self.metric} on {self.samples} samples: float {self.float_metric:.4f}, int8 "
                         f"{self.int8_metric:.4f} (change {self.int8_metric - self.float_metric:+.4f})")
        else:
            lines.append("accuracy change not measured: give data with targets (--data) to measure it")
        return lines


class _Calibration:
    """onnxruntime's ``CalibrationDataReader``: ``get_next`` returns one input feed after another, then None."""

    def __init__(self, names: list[str], inputs: tuple[np.ndarray, ...]) -> None:
        rows = min(len(inputs[0]), CALIBRATION_ROWS)
        self._feeds = iter([{name: a[start:start + CALIBRATION_BATCH] for name, a in zip(names, inputs)}
                            for start in range(0, rows, CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of onnxruntime's reader protocol; one pass is all calibration needs
        return None


class _HideQuantizerAdvice(logging.Filter):
    """onnxruntime's quantizer logs advice on the root logger ("consider pre-processing"); keep errors only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root, hide = logging.getLogger(), _HideQuantizerAdvice()
    root.addFilter(hide)
    try:
        yield
    finally:
        root.removeFilter(hide)


def quantize_int8(model_bytes: bytes, source: Source, inputs: tuple[np.ndarray, ...], targets: Any, *,
                  calibrate: bool | None = None) -> tuple[bytes, QuantizationReport]:
    """The int8 model and its report. ``inputs`` are graph inputs (real data or generated); ``calibrate``
    (default: when ``targets`` came with real data and the graph has convolutions) chooses static quantization."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    model = onnx.load_from_string(model_bytes)
    names = [value.name for value in model.graph.input]
    has_conv = any(node.op_type == "Conv" for node in model.graph.node)
    static = calibrate if calibrate is not None else (has_conv and targets is not None)
    with tempfile.TemporaryDirectory(prefix="modelkeep-quantize-") as scratch, _quiet():
        written = Path(scratch) / "int8.onnx"
        try:
            if static:
                quantize_static(model, written, _Calibration(names, inputs), quant_format=QuantFormat.QDQ,
                                per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
            else:
                quantize_dynamic(model, written, weight_type=QuantType.QInt8)
            quantized = onnx.load(str(written))
        except Exception as exc:  # noqa: BLE001 - the quantizer raises many kinds; each is a failed export
            raise ExportError(f"onnxruntime could not quantize {source.name} to int8: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from None
    entry = quantized.metadata_props.add()
    entry.key, entry.value = "modelkeep.quantization", f"int8 {'static (calibrated)' if static else 'dynamic'}"
    int8_bytes = quantized.SerializeToString()
    report = _measure(model_bytes, int8_bytes, source, inputs, targets, "static" if static else "dynamic")
    return int8_bytes, report


def _measure(float_bytes: bytes, int8_bytes: bytes, source: Source, inputs: tuple[np.ndarray, ...], targets: Any,
             method: str) -> QuantizationReport:
    float_session, int8_session = parity.session(float_bytes), parity.session(int8_bytes)
    float_out = parity.run_session(float_session, inputs)
    int8_out = parity.run_session(int8_session, inputs)
    diff = parity.max_abs_diff(float_out[:1], int8_out[:1])
    metric = float_metric = int8_metric = None
    if targets is not None and source.postprocessor is not None:
        metric = "mae" if getattr(source.postprocessor, "type", None) == "identity" else "accuracy"
        float_metric = score(source, float_out[0], targets)
        int8_metric = score(source, int8_out[0], targets)
    return QuantizationReport(method, len(float_bytes), len(int8_bytes), diff, metric, float_metric, int8_metric,
                              len(inputs[0]) if metric else 0)


def score(source: Source, outputs: np.ndarray, targets: Any) -> float:
    """Accuracy (the saved post-processor's classes against ``targets``, class indices or names) or, for
    regression, the mean absolute error."""
    import torch

    prediction = source.postprocessor.apply(torch.from_numpy(np.ascontiguousarray(outputs)))
    targets = np.asarray(targets)
    if prediction.probabilities is None:
        values = np.asarray(prediction.values, dtype=np.float64).reshape(len(targets), -1)
        return float(np.mean(np.abs(values - targets.astype(np.float64).reshape(len(targets), -1))))
    names = np.asarray(prediction.class_names, dtype=object)
    if targets.dtype.kind in "iu" or (targets.dtype.kind == "f" and np.array_equal(targets, np.round(targets))):
        index = targets.astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(names)):
            raise ExportError(f"the targets hold class {int(index.max())} but {source.name} has {len(names)} classes")
        expected = names[index]
    else:
        expected = targets.astype(str).astype(object)
    predicted = np.asarray(prediction.labels, dtype=object)
    if predicted.shape != expected.shape:
        raise ExportError(f"the targets have shape {list(expected.shape)} but the model predicts "
                          f"{list(predicted.shape)}; give one class per sample (or per position)")
    return float(np.mean(predicted == expected))


__all__ = ["CALIBRATION_ROWS", "QuantizationReport", "quantize_int8", "score"]

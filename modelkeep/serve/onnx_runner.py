"""The backends a served model's network runs on: onnxruntime when its ONNX export passes parity, eager PyTorch
otherwise.

``choose_backend(model, backend=...)`` decides once per model, at start-up (and when a followed alias brings a
new version). For ``"auto"`` and ``"onnxruntime"`` it exports the bare network with ``modelkeep.export.export_onnx``
into a private temporary folder, reads the file back into memory and removes the folder; the export has checked
the file in onnxruntime against eager PyTorch (``ExportError`` above its tolerance). A passing export runs in an
``onnxruntime.InferenceSession`` on the CPU provider (``OnnxNetwork``); any failure (an op the exporter refuses,
a parity miss, an input the check cannot generate, a model on a GPU) leaves ``"auto"`` on eager PyTorch under
``torch.inference_mode`` (``TorchNetwork``) with the reason in ``Backend.reason``, and makes ``"onnxruntime"``
refuse to start (``ConfigError`` with the reason). ``"torch"`` never exports.

Only the network is exported: the saved preprocessing is left out of the graph (``export_onnx`` would fold it),
so the server applies it in NumPy before either backend, and the post-processing after, on the logits: the two
backends differ only in the forward pass. A network is a callable from one NumPy batch of network inputs to the
list of its outputs as float32 arrays, in the signature's order. This module never writes outside its temporary
folder, and never imports the web framework.
"""
from __future__ import annotations

import copy
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, ModelkeepError

BACKENDS = ("auto", "onnxruntime", "torch")
#: the V2 metadata's ``platform`` per backend: Triton's name for an ONNX model run by onnxruntime, and plain
#: ``pytorch`` for eager PyTorch (Triton's ``pytorch_libtorch`` would claim a TorchScript model, which this is not)
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "torch": "pytorch"}
Network = Callable[[np.ndarray], list[np.ndarray]]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Backend:
    """What runs a model's network: ``name`` (``onnxruntime`` or ``torch``), the callable, why eager PyTorch
    runs when onnxruntime was tried (``reason``, empty otherwise), and what the export measured."""

    name: str
    network: Network
    reason: str = ""
    max_abs_diff: float | None = None
    tolerance: float | None = None
    export_seconds: float | None = None

    @property
    def platform(self) -> str:
        return PLATFORMS[self.name]

    def describe(self) -> str:
        """One line for the log."""
        if self.name == "onnxruntime":
            return (f"onnxruntime (ONNX export in {self.export_seconds:.1f} s, parity max abs diff "
                    f"{self.max_abs_diff:.2g} within {self.tolerance:g})")
        return "eager PyTorch" + (f": {self.reason}" if self.reason else "")


class TorchNetwork:
    """The network in eager PyTorch under ``torch.inference_mode``, ``chunk_rows`` rows per forward pass."""

    def __init__(self, module: Any, *, chunk_rows: int) -> None:
        self.module, self.chunk_rows = module, chunk_rows

    def __call__(self, rows: np.ndarray) -> list[np.ndarray]:
        import torch

        device = next(self.module.parameters(), torch.empty(0)).device
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(rows), self.chunk_rows):
                batch = torch.from_numpy(np.ascontiguousarray(rows[start:start + self.chunk_rows])).to(device)
                out = self.module(batch)
                chunks.append([o.float().cpu().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))])
        return [np.concatenate(parts) for parts in zip(*chunks)]


class OnnxNetwork:
    """The exported network in an onnxruntime CPU session (``threads``: intra-op threads; 0: onnxruntime's
    default, one per physical core), ``chunk_rows`` rows per run."""

    def __init__(self, model_bytes: bytes, *, threads: int = 0, chunk_rows: int = 32) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one graph at a time: the batcher runs one batch at a time per model
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # idle pool threads sleep instead of spinning: the event loop and the other models share these cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_dtype = _ONNX_DTYPES.get(first.type, np.float32)
        self.chunk_rows = chunk_rows

    def __call__(self, rows: np.ndarray) -> list[np.ndarray]:
        rows = np.ascontiguousarray(rows, dtype=self.input_dtype)
        chunks = [self.session.run(None, {self.input_name: rows[start:start + self.chunk_rows]})
                  for start in range(0, len(rows), self.chunk_rows)]
        return [np.concatenate(parts).astype(np.float32, copy=False) for parts in zip(*chunks)]


_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def choose_backend(model: Any, *, backend: str = "auto", threads: int = 0, chunk_rows: int = 32,
                   device: str | None = None, where: str = "model") -> Backend:
    """The backend ``model`` (a loaded ``modelkeep.artifact.Model``) runs on (see the module docstring)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    eager = TorchNetwork(model.module, chunk_rows=chunk_rows)
    if backend == "torch":
        return Backend("torch", eager)
    if device not in (None, "cpu"):
        reason = f"the model runs on {device!r} and the onnxruntime backend runs on the CPU"
        return _fallback(eager, reason, backend, where)
    try:
        model_bytes, exported, seconds = export_network(model)
        network = OnnxNetwork(model_bytes, threads=threads, chunk_rows=chunk_rows)
    except (ModelkeepError, ImportError) as exc:  # the exporter refused, parity missed, or onnxruntime is absent
        return _fallback(eager, f"{type(exc).__name__}: {_one_line(str(exc))}", backend, where)
    return Backend("onnxruntime", network, max_abs_diff=exported.max_abs_diff, tolerance=exported.tolerance,
                   export_seconds=seconds)


def export_network(model: Any) -> tuple[bytes, Any, float]:
    """The ONNX bytes of ``model``'s bare network (its preprocessing left out), the ``OnnxExport`` report and
    the seconds the export took; exported into a private temporary folder that is removed again."""
    from ..export.onnx import export_onnx

    bare = copy.copy(model)  # a shallow copy: the same module, without the preprocessing to fold
    bare.preprocessing = None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modelkeep-serve-onnx-") as folder:
        exported = export_onnx(bare, Path(folder) / "model.onnx")
        model_bytes = exported.path.read_bytes()
    return model_bytes, exported, time.perf_counter() - started


def _fallback(eager: TorchNetwork, reason: str, backend: str, where: str) -> Backend:
    if backend == "onnxruntime":
        raise ConfigError(f"cannot serve {where!r} with onnxruntime: {reason}; serve it with --backend auto "
                          "(eager PyTorch when the export fails) or --backend torch")
    return Backend("torch", eager, reason=reason)


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


__all__ = ["BACKENDS", "PLATFORMS", "Backend", "Network", "OnnxNetwork", "TorchNetwork", "choose_backend",
           "export_network"]

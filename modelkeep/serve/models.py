"""A served model: the loaded file, its name, version and signature, and what runs its batches.

``load_source`` reads a model file or a registry URL (``registry://name@production``, fetched into the
cache by ``modelkeep.registry.refs.fetch``) with ``mmap=False``: the weights live in this process's private
memory, so overwriting or deleting the file while serving changes nothing. The name is the file's stem or
the registry name; the version is the first 12 hex digits of the content hash, or of the registry version id
(as ``modelkeep ls`` shows it).

Two runners work on a batch of rows in the model's worker thread: ``infer_rows`` (the V2 tensors: the
network's raw outputs named by the signature, plus ``probabilities`` equal to what ``predict`` reports, the
same surface as ``export_onnx(..., probabilities=True)``, so a client moves to Triton unchanged) and
``predict_rows`` (``Model.predict``: saved pre- and post-processing, class names). Both apply the saved pre- and post-processing themselves around the forward pass of the model's
backend (``served.network``: onnxruntime or eager PyTorch under ``torch.inference_mode``, chosen by the table
with ``onnx_runner.choose_backend``). Never imports ``train`` or ``checkpoint``.
"""
from __future__ import annotations

import concurrent.futures
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, ModelNotFoundError
from .batching import Batcher
from .protocol import NUMPY_TO_V2, TensorMetadata

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output: its name, NumPy dtype and the shape of one sample (``None``: any size)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def metadata(self) -> TensorMetadata:
        return TensorMetadata(name=self.name, datatype=NUMPY_TO_V2.get(self.dtype, "FP32"),
                              shape=[-1, *(-1 if d is None else int(d) for d in self.shape)])


@dataclass
class ServedModel:
    """What the table holds per name; ``batchers`` run ``infer_rows``/``predict_rows`` for it."""

    name: str
    version: str
    source: str
    model: Any  # modelkeep.artifact.Model
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    token_limit: int | None = None  # integer inputs index an Embedding of this many rows
    allow_nonfinite: bool = False
    chunk_rows: int = 32
    executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="modelkeep-serve"))
    batchers: dict[str, Batcher] = field(default_factory=dict)
    backend: Any = None  # an onnx_runner.Backend, chosen by the table; None: eager PyTorch

    @property
    def network(self) -> Callable[[np.ndarray], list[np.ndarray]]:
        """The forward pass on preprocessed rows: the chosen backend's, eager PyTorch by default."""
        if self.backend is None:
            from .onnx_runner import Backend, TorchNetwork

            self.backend = Backend("torch", TorchNetwork(self.model.module, chunk_rows=self.chunk_rows))
        return self.backend.network

    @property
    def platform(self) -> str:
        """The V2 metadata's ``platform``: ``onnxruntime_onnx`` or ``pytorch`` (see ``onnx_runner.PLATFORMS``)."""
        return "pytorch" if self.backend is None else self.backend.platform

    @property
    def takes_text(self) -> bool:
        return bool(getattr(self.model.preprocessing, "takes_text", False))

    def reopen(self) -> None:
        """Serve again after ``close``: a fresh worker thread, the batchers taking jobs on it."""
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="modelkeep-serve")
        for batcher in self.batchers.values():
            batcher.reopen(self.executor)

    async def close(self) -> None:
        """Let queued requests finish, then free the worker thread."""
        for batcher in self.batchers.values():
            await batcher.close()
        self.executor.shutdown(wait=False)


def load_source(source: str, *, allow_nonfinite: bool = False, trust_code: bool = False,
                chunk_rows: int = 32, device: str | None = None, require_signature: str | None = None) -> ServedModel:
    """The model ``source`` names (a file or a registry URL), loaded into private memory. With
    ``require_signature`` (a public key file) the file -- for a registry URL, the version fetched into the cache,
    with the signature the registry holds for it -- must verify against it before anything else is read
    (``SignatureError`` otherwise: unsigned, signed by another key, or tampered)."""
    from ..artifact import load
    from ..registry.refs import fetch, is_registry_url

    if is_registry_url(source):
        path, name = fetch(source), registry_name(source)
        version = path.stem[:12]  # the cache keeps each version as <version id>.safetensors
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelNotFoundError(f"no such model file: {source!r}")
        name, version = path.name.removesuffix(".safetensors") if path.suffix == ".safetensors" else path.stem, ""
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"cannot serve {source!r} as {name!r}: a model name is letters, digits, '.', '_' and '-' "
                          "(at most 128); rename the file")
    model = load(path, mmap=False, trust_code=trust_code, device=device, require_signature=require_signature)
    version = version or (model.content_hash or "").partition(":")[2][:12] or "1"
    inputs, outputs = signature_tensors(model, source)
    return ServedModel(name, version, source, model, inputs, outputs, token_limit=_token_limit(model, inputs),
                       allow_nonfinite=allow_nonfinite, chunk_rows=chunk_rows)


def registry_name(url: str) -> str:
    from ..registry.base import parse_ref
    from ..registry.refs import split_url

    return parse_ref(split_url(url)[1])[0]


def signature_tensors(model: Any, where: str) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """The served inputs and outputs from the file's signature (a spec's own when the file has none)."""
    signature = model.manifest.signature
    if signature is None and model.spec is not None:
        from ..artifact.spec_codec import spec_signature

        signature = spec_signature(model.spec)
    inputs, outputs = _entries(signature, "inputs"), _entries(signature, "outputs")
    if len(inputs) != 1 or not outputs:
        raise ConfigError(f"cannot serve {where!r}: the server takes models with one input and a recorded "
                          f"signature (this file records {len(inputs)} inputs and {len(outputs)} outputs); "
                          "re-save it with example_input=")
    kind = getattr(model.postprocessor, "type", None)
    if kind in ("softmax", "sigmoid"):
        last = outputs[0].shape
        classes = 2 if kind == "sigmoid" else (last[-1] if last else None)
        outputs = (*outputs, TensorInfo(PROBABILITIES, "float32", (*last[:-1], classes)))
    return inputs, outputs


def _entries(signature: dict[str, Any] | None, direction: str) -> tuple[TensorInfo, ...]:
    entries = []
    for index, entry in enumerate((signature or {}).get(direction) or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
            continue
        name = entry.get("name") if isinstance(entry.get("name"), str) and entry["name"] else f"{direction}_{index}"
        dtype = entry.get("dtype") if entry.get("dtype") in NUMPY_TO_V2 else "float32"
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in entry["shape"][1:])
        entries.append(TensorInfo(name, dtype, shape))
    return tuple(entries)


def _token_limit(model: Any, inputs: tuple[TensorInfo, ...]) -> int | None:
    """For integer inputs: the size of the first Embedding they index (an id at or above it is refused)."""
    import torch

    if np.dtype(inputs[0].dtype).kind not in "iu":
        return None
    first = next((m for m in model.module.modules() if isinstance(m, torch.nn.Embedding)), None)
    return int(first.num_embeddings) if first is not None else None


def infer_rows(served: ServedModel, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The V2 outputs for checked input rows: raw network outputs by name, and ``probabilities``. The saved
    preprocessing runs here before the backend's network, the post-processing after it, whichever the backend."""
    import torch

    from ..artifact.model import refuse_nonfinite

    model = served.model
    if model.preprocessing is not None and not served.takes_text:
        rows = model.preprocessing.transform(rows)
        if not served.allow_nonfinite:
            refuse_nonfinite(np.asarray(rows), "preprocessed input")
    outputs = served.network(rows)
    if not served.allow_nonfinite:
        refuse_nonfinite(outputs[0], "network output")
    result = {info.name: values for info, values in zip(served.outputs, outputs)}
    if served.outputs[-1].name == PROBABILITIES:
        with torch.inference_mode():
            probabilities = model.postprocessor.apply(torch.from_numpy(outputs[0])).probabilities
        result[PROBABILITIES] = np.asarray(probabilities, np.float32)
    return result


def predict_rows(served: ServedModel, rows: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """``Model.predict`` on raw rows: one record per row, with every class ranked (callers keep their top k).
    On eager PyTorch this is ``Model.predict`` itself; on onnxruntime, the same steps around the session."""
    import torch

    if served.backend is None or served.backend.name == "torch":
        with torch.inference_mode():
            prediction = served.model.predict(rows, allow_nonfinite=served.allow_nonfinite,
                                              batch_size=served.chunk_rows)
    else:
        prediction = _predict_with(served, rows)
    return {"records": prediction.to_records(top=max(1, len(prediction.class_names)))}


def _predict_with(served: ServedModel, x: np.ndarray) -> Any:
    """``Model.predict`` with the forward pass on ``served.network``: its own two halves around it."""
    model, allow = served.model, served.allow_nonfinite
    return model.postprocess(served.network(model.preprocess(x, allow_nonfinite=allow))[0], allow_nonfinite=allow)


__all__ = ["PROBABILITIES", "ServedModel", "TensorInfo", "infer_rows", "load_source", "predict_rows",
           "registry_name", "signature_tensors"]

"""Send models out: ONNX (checked in onnxruntime), plain state dicts, Keras files, Hugging Face folders, Triton.

* ``export_onnx(model, out)`` — an ONNX file with the saved preprocessing folded in, checked against the
  model in onnxruntime before it is written (``onnx.py``, ``parity.py``); ``quantize="int8"`` (``quantize.py``);
* ``export_state_dict(model, out)`` — a ``torch.save``d tensor dict, ``torch.load(weights_only=True)``-safe;
* ``export_keras(model, out)`` — a Keras 3 ``.keras`` archive (``to_keras.py``);
* ``export_hf(file, out_dir)`` — a Hugging Face-style folder: ``model.safetensors``, a self-describing
  ``config.json`` and a ``README.md`` model card (``hf.py``); ``modelkeep import`` reads it back;
* ``export_triton(file, out_dir)`` — a Triton/KServe model repository: ``NAME/1/model.onnx`` (parity checked)
  and ``NAME/config.pbtxt`` with the signature and dynamic batching (``triton.py``).

Torch, onnx and onnxruntime are imported when an export runs, not when this package is imported.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "export_onnx": "onnx", "OnnxExport": "onnx", "DEFAULT_TOLERANCE": "onnx",
    "QuantizationReport": "quantize",
    "export_state_dict": "state_dict",
    "export_keras": "to_keras",
    "export_hf": "hf",
    "export_triton": "triton", "TritonExport": "triton",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

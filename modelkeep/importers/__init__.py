"""Bring models trained elsewhere in, safely: PyTorch, Hugging Face, Keras and TensorFlow files.

``import_model(src, out, ...)`` picks a reader from the file's content, reads
it without unpickling or running anything from it, matches the weights onto a
spec, a zoo model or a class, and writes an ordinary modelkeep file whose
provenance records the source's SHA-256 and format.
"""
from .base import READERS, Imported, Reader, readers, register_reader
# registers the readers, in the order they are tried (the ONNX sniff is the weakest, so it goes last; a folder
# modelkeep exported as Hugging Face-style is recognised before any other Hugging Face folder)
from . import hf_modelkeep, huggingface, keras, pytorch, savedmodel, onnx_file  # noqa: F401,E402
from .api import ImportReport, import_model

__all__ = ["READERS", "ImportReport", "Imported", "Reader", "import_model", "readers", "register_reader"]

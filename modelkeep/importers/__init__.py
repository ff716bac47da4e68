"""Bring models trained elsewhere in, safely: PyTorch, Hugging Face, Keras and TensorFlow files.

``import_model(src, out, ...)`` picks a reader from the file's content, reads
it without unpickling or running anything from it, matches the weights onto a
spec, a zoo model or a class, and writes an ordinary modelkeep file whose
provenance records the source's SHA-256 and format.
"""
from .base import READERS, Imported, Reader, readers, register_reader

__all__ = ["READERS", "Imported", "Reader", "readers", "register_reader"]

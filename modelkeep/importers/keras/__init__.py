"""Keras models in, without Keras or TensorFlow: ``.keras`` archives (Keras 3) and HDF5 files (Keras 2 and 3).

``keras_to_imported(config, weights, format=..., details=...)`` turns a Keras
model config and its per-layer weights into a modelkeep spec and tensors; the
readers here (and the SavedModel reader) feed it. Importing this package
registers the readers ``keras`` and ``keras-h5``.
"""
from . import archive, h5  # noqa: F401  (register the readers)
from .convert import keras_to_imported, supported_layers

__all__ = ["keras_to_imported", "supported_layers"]

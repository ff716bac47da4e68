"""Processing: what a model file carries to turn raw input into tensors and outputs into answers.

``preprocess`` holds the steps fitted on the training split (``Standardize``,
``MinMaxScale``, ``Rescale``, target steps ``OneHot`` and ``LabelMap``);
``postprocess`` the saved post-processors (``softmax``, ``sigmoid`` with a 0.5
threshold for one logit, ``identity`` for regression) and ``Prediction``. Both
are plain data in the file (JSON), never code. This layer sits above ``spec``,
``nn`` and ``zoo`` and below ``artifact``; it never reads or writes a file.
Names are imported on first use (NumPy is imported only then).
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "PREPROCESSORS": "preprocess", "Preprocessor": "preprocess", "Standardize": "preprocess",
    "MinMaxScale": "preprocess", "Rescale": "preprocess", "OneHot": "preprocess", "LabelMap": "preprocess",
    "Pipeline": "preprocess", "make_preprocessing": "preprocess", "preprocessor_from_dict": "preprocess",
    "Tokenize": "text",
    "POSTPROCESSORS": "postprocess", "PostProcessor": "postprocess", "Prediction": "postprocess",
    "Softmax": "postprocess", "Sigmoid": "postprocess", "Identity": "postprocess",
    "postprocessor_for": "postprocess", "postprocessor_from_dict": "postprocess", "make_postprocessor": "postprocess",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

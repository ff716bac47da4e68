"""Ensembles: several saved models combined into ONE modelkeep file (``ensemble(files, out, method=...)``).

``build`` loads the members, checks they can be combined (same inputs, task,
labels, outputs and saved preprocessing) and writes the file through the one
manifest builder and the tensor writer. The file's architecture is the
``ensemble`` codec's (``modelkeep.artifact.ensemble_codec``) and its network the
``modelkeep.nn.ensemble.Ensemble`` module, so ``load``, ``predict``, ``inspect``
and ``export_onnx`` handle it like any model. ``stacking`` fits the meta-model
of a ``stacking`` ensemble (L-BFGS on the members' validation predictions) and
``sharing`` finds the tensors members hold in common, stored once. This package
never imports the training layer (``modelkeep.train``, ``checkpoint``,
``transfer``): the meta-model is small and convex enough to fit exactly here.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {"ensemble": "build", "METHODS": "build"}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

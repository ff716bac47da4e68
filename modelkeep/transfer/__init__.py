"""Reuse: fine-tuning done right — new heads, freezing, gradual unfreezing, discriminative learning rates, L2-SP
and BatchNorm modes, on any model: zoo, spec-built, imported, or a user class through an adapter.

``finetune(base, train, ...)`` is the entry point; it hands ``fit`` a set of group rules, an L2-SP
regularizer, BatchNorm mode policies and an unfreezing schedule (the seams of ``modelkeep.train``).
The modules: ``settings`` (``TransferSettings``) → ``selectors`` (which parameters a selector means) →
``adapter`` (``as_transferable``, ``freeze``, ``unfreeze``) → ``l2sp``, ``batchnorm``, ``schedule`` →
``tuning`` (``finetune``) → ``tables`` (``summary``); a module never shares a name it exports, so importing it
cannot shadow the function. Names are imported on first use, so reading settings does not import torch.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "TransferSettings": "settings", "BATCHNORM_MODES": "settings",
    "as_transferable": "adapter", "Transferable": "adapter", "freeze": "adapter", "unfreeze": "adapter",
    "L2SP": "l2sp", "reestimate_statistics": "batchnorm", "FrozenLayersKeepEval": "batchnorm",
    "UnfreezeSchedule": "schedule", "finetune": "tuning", "TransferResult": "tuning",
    "resolve_base": "tuning", "summary": "tables", "model_summary_rows": "tables",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__

"""The registry of architecture codecs: one ``ArchitectureCodec`` per ``type`` of architecture document.

The built-in ``spec`` and ``class`` codecs are registered here; an importer (a
later layer) registers the codec of the kind it brings in with
``ARCHITECTURES.register(type, codec)``. Both built-in modules are light: no
torch and no spec layer at import time, so ``inspect`` stays fast.
"""
from __future__ import annotations

from typing import Any

from .._registry import Registry
from ..errors import FormatError
from .architecture import ArchitectureCodec
from .class_codec import ClassCodec
from .ensemble_codec import EnsembleCodec
from .spec_codec import SpecCodec

ARCHITECTURES: Registry[ArchitectureCodec] = Registry("architecture type", FormatError)


def codec_for(kind: Any, where: object = "the file") -> ArchitectureCodec:
    """The codec of architecture ``type`` ``kind``; an unknown type is a ``FormatError`` naming the known ones."""
    if isinstance(kind, str) and kind in ARCHITECTURES and ARCHITECTURES.canonical(kind) == kind:
        return ARCHITECTURES.get(kind)
    known = ", ".join(repr(name) for name in ARCHITECTURES.names())
    raise FormatError(
        f"{where}: architecture type {str(kind)[:40]!r} is not known to this modelkeep (known: {known}); the file "
        "may need a newer modelkeep, or the plug-in that registers that type"
    )


ARCHITECTURES.register("spec", SpecCodec())
ARCHITECTURES.register("class", ClassCodec())
ARCHITECTURES.register("ensemble", EnsembleCodec())

__all__ = ["ARCHITECTURES", "codec_for"]

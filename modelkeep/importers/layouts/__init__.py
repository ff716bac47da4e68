"""Named key layouts: how another library names the weights of one of the zoo's models.

A ``Layout`` turns a state dict in that library's naming (torchvision's
``layer1.0.conv1.weight``, Hugging Face's ``encoder.layer.0.attention.self.query.weight``)
into the zoo spec's (``layers.layer1_0_conv1.weight``), re-arranging tensors
where the two differ (joined query/key/value projections, say). Layouts are
facts about the other library's published names, written as data and small
functions; nothing here imports that library.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..._registry import Registry
from ...errors import FormatError

State = dict[str, Any]  # name -> torch.Tensor


@dataclass(frozen=True)
class Layout:
    model: str                          # zoo model name ("resnet18")
    source: str                         # "torchvision", "timm", "huggingface"
    convert: Callable[[State], State]   # the source's state dict -> the zoo spec's state dict
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.model}:{self.source}"


LAYOUTS: Registry[Layout] = Registry("weight layout", FormatError)


def register_layout(model: str, source: str, convert: Callable[[State], State], description: str = "") -> Layout:
    """Add the layout that maps ``source``'s names for zoo model ``model`` onto the zoo spec's."""
    layout = Layout(model, source, convert, description)
    LAYOUTS.register(layout.key, layout)
    return layout


def layouts_for(model: str) -> list[Layout]:
    """Every registered layout of zoo model ``model``, by source name."""
    return [LAYOUTS.get(key) for key in LAYOUTS.names() if LAYOUTS.get(key).model == model.lower()]


__all__ = ["LAYOUTS", "Layout", "State", "layouts_for", "register_layout"]

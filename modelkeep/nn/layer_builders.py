"""How each layer kind becomes a ``torch.nn.Module``: the builder registry.

``modelkeep.spec`` says what a layer is (fields, shapes, parameter formulas)
and never imports torch or this package; building is done here. A builder is
a function ``builder(kind, inputs) -> torch.nn.Module``: ``kind`` is the
validated ``LayerKind`` (its fields are ``kind.fields``) and ``inputs`` the
per-sample input shapes. The builders of the built-in kinds live in
``modelkeep.nn.layers``, one module per family, mirroring
``modelkeep.spec.layers``; they import this module, never the other way round,
and importing ``modelkeep.nn`` registers them all.

A kind of your own (``modelkeep.register_kind``) says how it is built in one
of two ways; the first is the shortest, the second keeps the kind itself free
of torch (as the built-in kinds are)::

    @register_kind
    class Scale(LayerKind):                 # 1. a build method on the kind
        name = "Scale"
        examples = [{"inputs": [[4]], "fields": {}}]

        def build(self, inputs):
            return MyScaleModule(inputs[0][-1])

    @register_builder("Scale")              # 2. a builder registered here
    def build_scale(kind, inputs):
        return MyScaleModule(inputs[0][-1])

Lookup walks the kind's class and its bases, nearest first; at each class a
registered builder (under that class's own ``name``) wins over a ``build``
method defined there. So a subclass of a built-in kind that changes only its
validation is built like its base, and one that defines ``build`` is built by it.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .._registry import Registry
from ..errors import SpecError
from ..spec.kinds import LAYER_KINDS, LayerKind, Shape

LayerBuilder = Callable[[LayerKind, list[Shape]], nn.Module]

LAYER_BUILDERS: Registry[LayerBuilder] = Registry("layer builder", SpecError)


def register_builder(*kind_names: str) -> Callable[[LayerBuilder], LayerBuilder]:
    """Decorator: ``builder`` builds the layer kinds ``kind_names`` (registered with ``register_kind`` first)."""
    if not kind_names:
        raise TypeError("register_builder needs at least one layer kind name: @register_builder('Dense')")

    def add(builder: LayerBuilder) -> LayerBuilder:
        for name in kind_names:
            # canonical: lookup goes by a class's own ``name``, never by an alias
            LAYER_BUILDERS.register(LAYER_KINDS.canonical(name), builder)
        return builder

    return add


def _call_build_method(kind: LayerKind, inputs: list[Shape]) -> nn.Module:
    return kind.build(inputs)  # type: ignore[attr-defined]  (the optional hook of a user kind)


def builder_for(kind: LayerKind) -> LayerBuilder:
    """The builder of ``kind``: see the module docstring for the order of lookup."""
    for cls in type(kind).__mro__:
        if cls is LayerKind:
            break
        own = vars(cls)
        name = own.get("name")
        if isinstance(name, str) and name in LAYER_BUILDERS:
            return LAYER_BUILDERS.get(name)
        if callable(own.get("build")):
            return _call_build_method
    raise kind.error(
        f"layer kind {kind.name!r} has no builder; give its class a build(self, inputs) method that returns a "
        f"torch.nn.Module, or register a function with @modelkeep.nn.register_builder({kind.name!r})"
    )


def build_layer(kind: LayerKind, inputs: list[Shape]) -> nn.Module:
    """The ``torch.nn.Module`` for one layer of kind ``kind`` reading ``inputs`` (per-sample shapes)."""
    module = builder_for(kind)(kind, inputs)
    if not isinstance(module, nn.Module):
        raise kind.error(f"its builder returned {type(module).__name__}, not a torch.nn.Module; return a module")
    return module

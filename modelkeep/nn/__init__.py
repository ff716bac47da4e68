"""Specs built into ``torch.nn`` modules. Importing this package imports torch.

``build(spec)`` gives a ``SpecModule``; each layer is made by the builder of
its kind (``LAYER_BUILDERS``, see ``modelkeep.nn.layer_builders`` for how a
kind of your own is built).
"""
from .build import SpecModule, build
from .layer_builders import LAYER_BUILDERS, build_layer, register_builder

__all__ = ["LAYER_BUILDERS", "SpecModule", "build", "build_layer", "register_builder"]

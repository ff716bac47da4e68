"""Builders of every built-in layer kind, one module per family as in ``modelkeep.spec.layers``.

Importing this package registers them all in ``modelkeep.nn.layer_builders.LAYER_BUILDERS``.
"""
from . import activation, attention, conv, core, merge, norm, pooling, recurrent, scale, shape, text  # noqa: F401

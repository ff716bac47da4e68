"""Every built-in layer kind, one module per family. Importing this package registers them all."""
from . import activation, attention, conv, core, merge, norm, pooling, recurrent, scale, shape, text  # noqa: F401

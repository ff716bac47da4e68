"""Share models: a registry of named, versioned, content-addressed models (embedded by default)."""

from .api import gc, list, open_registry, pull, push, remove, set_alias, show
from .embedded import EmbeddedRegistry, Version

__all__ = ["EmbeddedRegistry", "Version", "gc", "list", "open_registry", "pull", "push", "remove", "set_alias",
           "show"]

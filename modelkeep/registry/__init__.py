"""Share models: a registry of named, versioned, content-addressed models (embedded, object storage, OCI)."""

from .api import card, copy, gc, lineage, list, open_registry, pull, push, remove, set_alias, show, sign
from .base import RegistryBackend, Version
from .embedded import EmbeddedRegistry
from .ops import CopyReport, LineageNode

__all__ = ["CopyReport", "EmbeddedRegistry", "LineageNode", "RegistryBackend", "Version", "card", "copy", "gc",
           "lineage", "list", "open_registry", "pull", "push", "remove", "set_alias", "show", "sign"]

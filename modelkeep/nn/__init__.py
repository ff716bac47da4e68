"""Specs built into ``torch.nn`` modules. Importing this package imports torch."""
from .build import SpecModule, build

__all__ = ["SpecModule", "build"]

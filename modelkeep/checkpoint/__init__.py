"""Checkpoints: atomic commits now; the manager, triggers and retention grow here."""
from .atomic import atomic_write, clean_leftovers

__all__ = ["atomic_write", "clean_leftovers"]

"""Reading a small outside file whole, with its size checked before a byte is allocated.

``read_capped(path, cap, refuse)`` is the one way modelkeep reads a whole small file it did not write (a
signature, a key, a model card, a JSON document of another library): it must be a regular file (a FIFO or a
device would block or never end), its declared size at most ``cap``, and at most ``cap`` bytes are read even if
it grows meanwhile. ``refuse(why)`` makes the caller's own exception from the reason; a missing file raises
``FileNotFoundError`` for the caller to word.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable


def read_capped(path: str | os.PathLike[str], cap: int, refuse: Callable[[str], Exception]) -> bytes:
    """The bytes of the regular file ``path``; ``refuse(why)`` is raised when it is not one or exceeds ``cap``."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise refuse("not a regular file")
    if info.st_size > cap:
        raise refuse(f"{info.st_size} bytes, over the limit of {cap}")
    with open(Path(path), "rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise refuse(f"over the limit of {cap} bytes (it grew while being read)")
    return data

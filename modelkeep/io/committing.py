"""The ``Committer`` protocol: how an item becomes visible to readers whole, or not at all.

Its implementations, ``RenameCommitter`` (a local folder) and ``MarkerCommitter`` (any fsspec store, S3 among
them), are in ``committer.py``.
"""
from __future__ import annotations

from typing import BinaryIO, ContextManager, Protocol


class Committer(Protocol):
    """Makes each written item visible to readers whole, or not at all.

    Call order: ``clean()`` once at start-up (removes what crashed writers
    left); then any number of ``with committer.writing(name) as handle: ...``
    blocks — the item appears, complete, when the block exits cleanly and not
    at all when it raises; ``is_committed(name)`` before a reader trusts an item.

    A worked example, a committer keeping items in a dict (the commit is one
    dict assignment, which no reader can see half done)::

        class DictCommitter:
            def __init__(self):
                self.items = {}

            @contextlib.contextmanager
            def writing(self, name):
                buffer = io.BytesIO()
                yield buffer                          # raises here: nothing is stored
                self.items[name] = buffer.getvalue()  # the commit

            def is_committed(self, name):
                return name in self.items

            def clean(self):
                return []                             # a dict holds no leftovers
    """

    def writing(self, name: str) -> ContextManager[BinaryIO]:
        """A seekable binary handle whose bytes become item ``name`` when the block exits cleanly."""
        ...

    def is_committed(self, name: str) -> bool:
        """Whether ``name`` is a complete item a reader may trust."""
        ...

    def clean(self) -> list[str]:
        """Remove what writers that died mid-write left; return the names removed."""
        ...


__all__ = ["Committer"]

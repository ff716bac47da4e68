"""A named registry: one object with ``register``/``get``/``names``.

Layer kinds, zoo models, losses and optimizers each get one ``Registry``
instance. A miss raises an error that lists close names ("did you mean ...?").
"""
from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from .errors import ModelkeepError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names (case-insensitive) to objects of one kind."""

    def __init__(self, what: str, error: type[ModelkeepError] = ModelkeepError) -> None:
        self.what = what
        self._error = error
        self._items: dict[str, T] = {}
        self._canonical: dict[str, str] = {}

    def register(self, name: str, item: T | None = None, *, aliases: tuple[str, ...] = ()):
        """Register ``item`` under ``name``; without ``item``, work as a decorator."""

        def add(obj: T) -> T:
            for key in (name, *aliases):
                folded = key.lower()
                if folded in self._items:
                    raise ValueError(f"{self.what} {key!r} is registered twice")
                self._items[folded] = obj
                self._canonical[folded] = name
            return obj

        if item is not None:
            return add(item)
        return add

    def get(self, name: str) -> T:
        try:
            return self._items[str(name).lower()]
        except KeyError:
            raise self._error(self.unknown_message(name)) from None

    def canonical(self, name: str) -> str:
        self.get(name)
        return self._canonical[str(name).lower()]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name).lower(), list(self._items), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(self._canonical[c]) for c in close)}?" if close else ""
        return f"unknown {self.what} {name!r}{hint} Known: {', '.join(self.names())}."

    def names(self) -> list[str]:
        return sorted(set(self._canonical.values()), key=str.lower)

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

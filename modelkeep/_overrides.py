"""The one ``--set KEY=VALUE`` parser, and the bounded YAML reader behind it.

Every command that takes ``--set`` (``train``, ``cv``, ``params``, ``zoo show``)
reads its values here, so ``1e-3`` is the float 0.001 everywhere (YAML 1.1
would read it as a string; people write it) and a value means the same thing
whichever command receives it. Values are YAML: numbers, words, ``null``,
``true``, ``[lists]`` and ``{mappings}``; keys may be dotted (``loss.delta``).

Every read is bounded before anything is built: the text's length, the nesting
depth (checked on the event stream, which does not recurse) and the number of
nodes the value expands to (YAML aliases can make a few hundred characters
expand to a billion: "billion laughs"). ``--set`` values may not use aliases at all.

This module sits at the bottom of the package: it imports only ``errors`` (and
PyYAML, lazily, so ``--help`` stays fast). Errors are raised as the class the
caller names (``ConfigError`` for training configs, ``SpecError`` for specs).
"""
from __future__ import annotations

import copy
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import ConfigError, ModelkeepError

__all__ = ["MAX_DOCUMENT_CHARS", "MAX_OVERRIDE_CHARS", "apply_overrides", "load_yaml", "parse_overrides",
           "parse_value", "shorten_value", "split_override"]

MAX_OVERRIDE_CHARS = 4096         # one --set item
MAX_DOCUMENT_CHARS = 1 << 20      # one YAML document (a training config)
MAX_DEPTH = 32                    # nesting of lists and mappings
MAX_NODES = 100_000               # values after aliases are expanded

ErrorClass = Callable[[str], ModelkeepError]

# YAML 1.1 floats, plus what people write: 1e-3, 5E2, .5 (PyYAML's own pattern needs a dot: 1.0e-3).
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?[0-9][0-9_]*\.[0-9_]*$"
                    r"|^[-+]?\.[0-9_]+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")
_LOADER: Any = None


def _loader() -> Any:
    """PyYAML's safe loader (no object is ever constructed) reading ``1e-3`` as a float."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
        _LOADER = Loader
    return _LOADER


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shorten_value(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a config value may be a
    100,000-item list, and an error is one line. Containers are cut before they are printed whole."""
    if isinstance(value, (list, tuple)) and len(value) > limit:
        value = type(value)(value[:limit]) if isinstance(value, list) else tuple(value[:limit])
    elif isinstance(value, dict) and len(value) > limit:
        value = dict(list(value.items())[:limit])
    elif isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    return _shorten(repr(value), limit)


def load_yaml(text: str, *, what: str, error: ErrorClass = ConfigError, max_chars: int = MAX_DOCUMENT_CHARS,
              aliases: bool = True) -> Any:
    """``text`` as YAML, within the limits above; ``what`` names it in messages (``"config.yaml"``)."""
    import yaml

    if len(text) > max_chars:
        raise error(f"{what} is {len(text):,} characters long; the limit is {max_chars:,}")
    loader = _loader()
    try:
        depth = 0
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise error(f"{what} nests lists or mappings deeper than {MAX_DEPTH} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent) and not aliases:
                raise error(f"{what} uses a YAML alias (*{event.anchor}); write the value out instead")
        value = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(f"{what} is not valid YAML: {' '.join(str(exc).split())}") from None
    _check_expanded_size(value, what, error)
    return value


def _check_expanded_size(value: Any, what: str, error: ErrorClass) -> None:
    """Count the nodes ``value`` has once aliases are expanded, stopping at the limit (so the count is bounded too)."""
    pending, seen = [value], 0
    while pending:
        node = pending.pop()
        seen += 1
        if seen > MAX_NODES:
            raise error(f"{what} expands to more than {MAX_NODES:,} values (YAML aliases?); write a smaller document")
        if isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def parse_value(text: str, *, what: str = "--set value", error: ErrorClass = ConfigError) -> Any:
    """One ``--set`` value as YAML (``1e-3`` → 0.001, ``[64, 32]`` → a list, an empty value → None)."""
    return load_yaml(text, what=what, error=error, max_chars=MAX_OVERRIDE_CHARS, aliases=False)


def split_override(item: str, *, error: ErrorClass = ConfigError) -> tuple[list[str], Any]:
    """``"loss.delta=2"`` → ``(["loss", "delta"], 2)``."""
    if len(item) > MAX_OVERRIDE_CHARS:
        raise error(f"--set {_shorten(item)!r} is {len(item):,} characters long; the limit is {MAX_OVERRIDE_CHARS:,}")
    key, equals, text = item.partition("=")
    parts = [part for part in key.strip().split(".") if part]
    if not equals or not parts:
        raise error(f"--set takes KEY=VALUE (for example epochs=5 or num_classes=10), got {_shorten(item)!r}")
    return parts, parse_value(text, what=f"--set {'.'.join(parts)}: the value {_shorten(text)!r}", error=error)


def parse_overrides(items: Iterable[str], *, error: ErrorClass = ConfigError) -> dict[str, Any]:
    """``["num_classes=10", "fc.units=5"]`` → ``{"num_classes": 10, "fc.units": 5}`` (dotted keys kept whole)."""
    out: dict[str, Any] = {}
    for item in items:
        parts, value = split_override(item, error=error)
        out[".".join(parts)] = value
    return out


def _as_type(key: str, value: Any) -> dict[str, Any]:
    return {"type": value}


def apply_overrides(document: Mapping[str, Any], items: Sequence[str], *, error: ErrorClass = ConfigError,
                    promote: Callable[[str, Any], dict[str, Any]] = _as_type) -> dict[str, Any]:
    """``items`` applied to a copy of ``document``; a dotted key reaches into mappings, creating them.

    A name (a string) on the way to a deeper key becomes a mapping through ``promote``
    (by default ``loss: mse`` then ``--set loss.delta=2`` gives ``{type: mse, delta: 2}``).
    """
    document = copy.deepcopy(dict(document))
    for item in items:
        parts, value = split_override(item, error=error)
        target = document
        for depth, part in enumerate(parts[:-1]):
            current = target.get(part)
            if isinstance(current, str):
                current = promote(part, current)
            if current is None:
                current = {}
            if not isinstance(current, dict):
                raise error(f"--set {'.'.join(parts)}: {'.'.join(parts[:depth + 1])!r} is not a mapping")
            target[part] = current
            target = current
        target[parts[-1]] = value
    return document

"""Matching the tensor names of a file onto a module's: explicit prefix mappings and the usual wrapper prefixes.

State dicts saved elsewhere rarely use the target's names as they are: ``nn.DataParallel`` adds
``module.``, ``torch.compile`` adds ``_orig_mod.``, Lightning keeps the network under ``model.``,
and users rename whole sub-trees. ``match_keys`` renames the source names with an explicit
mapping (``{"old.prefix": "new.prefix"}``), then strips whichever known wrapper prefix (or
combination of them) makes the most tensors fit by name and shape, and reports what was loaded,
missing, unexpected and mismatched. ``load_weights`` and ``import_model`` share it. It looks at
names and shapes only: no tensor is read here, and torch is not imported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ConfigError

#: Prefixes wrappers add to every name: DataParallel/DistributedDataParallel, torch.compile, Lightning.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
MAX_MAPPING_ITEMS = 1000

Shape = tuple[int, ...]


@dataclass(frozen=True)
class KeyMatch:
    """How a file's tensors fit a module: ``pairs`` maps each loaded target name to its source name.

    ``stripped`` is the wrapper prefix removed from the source names ("" when none was);
    ``missing`` are target names nothing fits, ``unexpected`` source names (after renaming) the
    target lacks, ``mismatched`` ``(target name, source shape, target shape)``.
    """

    pairs: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    stripped: str = ""

    @property
    def loaded(self) -> list[str]:
        return sorted(self.pairs)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def score(self) -> tuple[int, int, int]:
        """Higher is better: tensors that fit, then fewer strays, then fewer shape mismatches."""
        return len(self.pairs), -len(self.unexpected) - len(self.missing), -len(self.mismatched)

    def summary(self, limit: int = 10) -> str:
        """Lines a person reads: counts, then the first ``limit`` names of each problem."""
        removed = f" (prefix {self.stripped!r} removed)" if self.stripped else ""
        lines = [f"loaded {len(self.pairs)} tensors{removed}"]
        if self.missing:
            lines.append(f"missing from the file ({len(self.missing)}): {', '.join(self.missing[:limit])}")
        if self.unexpected:
            lines.append(f"in the file but not in the model ({len(self.unexpected)}): "
                         f"{', '.join(self.unexpected[:limit])}")
        for name, source_shape, target_shape in self.mismatched[:limit]:
            lines.append(f"shape mismatch {name}: file {list(source_shape)}, model {list(target_shape)}")
        return "\n".join(lines)


def parse_mapping(items: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["old.prefix=new.prefix", ...]`` (the CLI's ``--map``) or a dict, checked, as a dict."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    elif isinstance(items, str):
        raise ConfigError("mapping= takes a dict {'old.prefix': 'new.prefix'} or a list of 'old=new' strings")
    else:
        pairs = []
        for item in items:
            old, equals, new = str(item).partition("=")
            if not equals:
                raise ConfigError(f"a key mapping is OLD=NEW (e.g. backbone.=features.), got {str(item)[:80]!r}")
            pairs.append((old.strip(), new.strip()))
    if len(pairs) > MAX_MAPPING_ITEMS:
        raise ConfigError(f"{len(pairs)} key mappings given; at most {MAX_MAPPING_ITEMS} are allowed")
    mapping: dict[str, str] = {}
    for old, new in pairs:
        if not isinstance(old, str) or not isinstance(new, str):
            raise ConfigError(f"key mappings map strings to strings, got {old!r}: {new!r}")
        if old in mapping:
            raise ConfigError(f"the key mapping names {old!r} twice")
        mapping[old] = new
    return mapping


def _prefix_matches(name: str, old: str) -> bool:
    """``old`` is a prefix of ``name`` on a name boundary (``enc`` fits ``enc.w`` and ``enc``, not ``encoder.w``)."""
    if old == "" or old.endswith(".") or name == old:
        return name.startswith(old)
    return name.startswith(old + ".")


def rename(name: str, mapping: Mapping[str, str]) -> str:
    """``name`` with the longest matching prefix of ``mapping`` replaced (unchanged when none matches)."""
    best = None
    for old in mapping:
        if _prefix_matches(name, old) and (best is None or len(old) > len(best)):
            best = old
    return name if best is None else mapping[best] + name[len(best):]


def apply_mapping(names: Iterable[str], mapping: Mapping[str, str]) -> dict[str, str]:
    """``{new name: source name}`` for every source name; two names renamed alike are a ``ConfigError``."""
    renamed: dict[str, str] = {}
    for name in names:
        new = rename(name, mapping) if mapping else name
        if new in renamed:
            raise ConfigError(f"the key mapping gives two tensors the name {new!r} ({renamed[new]!r} and {name!r})")
        renamed[new] = name
    return renamed


def wrapper_prefixes(names: Iterable[str], known: Sequence[str] = WRAPPER_PREFIXES) -> list[str]:
    """Every chain of known wrapper prefixes some name starts with (``module._orig_mod.``), and ""."""
    found = {""}
    for name in names:
        prefix = ""
        while True:
            token = next((p for p in known if name.startswith(prefix + p) and len(name) > len(prefix + p)), None)
            if token is None:
                break
            prefix += token
            found.add(prefix)
    return sorted(found, key=len)


def strip_prefix(names: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``names`` (``{name: source name}``) with ``prefix`` removed where present; a clash keeps the name as it was."""
    if not prefix:
        return dict(names)
    out: dict[str, str] = {}
    for name, source in names.items():
        short = name[len(prefix):] if name.startswith(prefix) else name
        out[name if short in names and short != name else short] = source
    return out


def compare(names: Mapping[str, str], source_shapes: Mapping[str, Shape], target_shapes: Mapping[str, Shape],
            stripped: str = "") -> KeyMatch:
    """How ``names`` (``{target-side name: source name}``) fit ``target_shapes``."""
    pairs, unexpected, mismatched = {}, [], []
    for name, source in names.items():
        wanted = target_shapes.get(name)
        if wanted is None:
            unexpected.append(name)
        elif tuple(source_shapes[source]) != tuple(wanted):
            mismatched.append((name, tuple(source_shapes[source]), tuple(wanted)))
        else:
            pairs[name] = source
    seen = set(pairs) | {m[0] for m in mismatched}
    missing = sorted(name for name in target_shapes if name not in seen)
    return KeyMatch(pairs, missing, sorted(unexpected), sorted(mismatched), stripped)


def match_keys(source_shapes: Mapping[str, Shape], target_shapes: Mapping[str, Shape], *,
               mapping: Mapping[str, str] | None = None, strip_wrappers: bool = True) -> KeyMatch:
    """Fit the source tensors (name -> shape) onto the target's, after ``mapping`` and the best wrapper strip.

    A wrapper prefix is removed only when that makes more tensors fit; the explicit ``mapping``
    is applied first, to the names as the file gives them.
    """
    renamed = apply_mapping(source_shapes, mapping or {})
    best = compare(renamed, source_shapes, target_shapes)
    if not strip_wrappers or best.complete:
        return best
    for prefix in wrapper_prefixes(renamed)[1:]:
        candidate = compare(strip_prefix(renamed, prefix), source_shapes, target_shapes, prefix)
        if candidate.score() > best.score():
            best = candidate
    return best


def shapes_of(state: Mapping[str, Any]) -> dict[str, Shape]:
    """``{name: shape}`` of a state dict (tensors, or anything with a ``shape``)."""
    return {name: tuple(value.shape) for name, value in state.items()}


__all__ = ["KeyMatch", "WRAPPER_PREFIXES", "apply_mapping", "compare", "match_keys", "parse_mapping", "rename",
           "shapes_of", "strip_prefix", "wrapper_prefixes"]

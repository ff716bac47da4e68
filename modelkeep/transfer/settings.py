"""``TransferSettings``: how a fine-tune reuses its base — the one frozen dataclass of transfer options.

Every field is a keyword of ``finetune`` (same name, same default) and a key of a training config's
``transfer:`` section; ``to_dict()`` is what the fine-tuned file records in its lineage and what a
resume must match. Values are checked when the settings are made, with one-line ``ConfigError``s.
Never touches a model and never imports torch.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .._overrides import shorten_value
from ..errors import ConfigError

__all__ = ["BATCHNORM_MODES", "TransferSettings", "FREEZE_KEYWORDS"]

BATCHNORM_MODES = ("frozen", "train", "reestimate")
FREEZE_KEYWORDS = ("all_but_head", "all", "none")
_GROUP_KEYS = ("pattern", "layers", "lr_scale", "weight_decay", "frozen")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_selector(item: Any) -> Any:
    if isinstance(item, bool) or not isinstance(item, (int, str)) or item == "":
        raise ConfigError(f"freeze: a selector is a layer index, a layer name or a glob pattern, "
                          f"got {shorten_value(item)}")
    return item


def _normalize_blocks(value: Any) -> Any:
    if value in ("auto", "layers"):
        return value
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ConfigError(f"blocks must be 'auto', 'layers' or a list of globs on layer names (one block each), "
                      f"got {shorten_value(value)}")


def _normalize_freeze(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str) and value in FREEZE_KEYWORDS:
        return None if value == "none" else value
    items = [value] if isinstance(value, (str, int)) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"freeze must be 'all_but_head', 'all', or a list of layer indices, names or glob "
                          f"patterns, got {shorten_value(value)}")
    return tuple(_check_selector(item) for item in items)


def _normalize_l2sp(value: Any) -> dict[str, float] | None:
    if value is None or value is False:
        return None
    if _number(value):
        value = {"alpha": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"l2sp must be a number (alpha) or {{alpha: a, beta: b}}, got {shorten_value(value)}")
    unknown = sorted(set(value) - {"alpha", "beta"})
    if unknown:
        raise ConfigError(f"l2sp takes 'alpha' and 'beta', not {', '.join(map(repr, unknown))}")
    alpha, beta = value.get("alpha", 0.0), value.get("beta", 0.0)
    for name, number in (("alpha", alpha), ("beta", beta)):
        if not (_number(number) and number >= 0):
            raise ConfigError(f"l2sp {name} must be a number >= 0, got {shorten_value(number)}")
    if alpha == 0 and beta == 0:
        return None
    return {"alpha": float(alpha), "beta": float(beta)}


def _normalize_groups(value: Any) -> tuple[dict[str, Any], ...]:
    """Group rules as plain dicts (what a file records); ``GroupRule``s and mappings both accepted."""
    if not value:
        return ()
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
        value = [value]
    out = []
    for rule in value:
        if dataclasses.is_dataclass(rule) and not isinstance(rule, type):
            rule = dataclasses.asdict(rule)
        if not isinstance(rule, Mapping):
            raise ConfigError(f"groups holds GroupRules or mappings {{pattern|layers, lr_scale, weight_decay, "
                              f"frozen}}, got {shorten_value(rule)}")
        unknown = sorted(set(rule) - set(_GROUP_KEYS))
        if unknown:
            raise ConfigError(f"groups: unknown key {unknown[0]!r}; a group has {', '.join(_GROUP_KEYS)}")
        entry = {key: rule[key] for key in _GROUP_KEYS if key in rule and rule[key] is not None}
        if isinstance(entry.get("layers"), list):
            entry["layers"] = tuple(entry["layers"])
        out.append(entry)
    return tuple(out)


def _whole(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {shorten_value(value)}")
    return value


@dataclass(frozen=True)
class TransferSettings:
    """What a fine-tune does with its base, on top of ``fit``'s own options.

    ``head``: a fresh head of that many outputs (None keeps the base's). ``freeze``:
    ``"all_but_head"``, ``"all"`` (every pretrained layer; a new head still trains) or selectors —
    layer indices (``-1`` is the head), layer names (``"conv1"``) or glob patterns on parameter names
    (``"layers.conv*"``); frozen layers never train. ``unfreeze_every``: gradual unfreezing, one more
    block (from the head towards the input) every N epochs; ``blocks`` says what a block is: ``"auto"``
    (from the layer names: ``layer1_0_conv1`` and ``layer1_0_bn1`` are block ``layer1_0``), ``"layers"``
    (each layer) or a list of globs on layer names, one block each. ``discriminative``: layer ``l`` of ``L``
    trains at ``lr · alpha^(L − l)``. ``groups``: explicit ``GroupRule``s (first match wins, before the
    discriminative rates). ``l2sp``: ``alpha/2 ‖w − w₀‖²`` toward the base weights plus ``beta/2 ‖w‖²``
    on new ones. ``batchnorm``: ``"train"`` (statistics move in layers that train), ``"frozen"``
    (never move) or ``"reestimate"`` (recomputed on the new data first, then held).
    ``probe_epochs``: train only the head for that many epochs first (linear probe, then fine-tune).

    >>> TransferSettings.from_dict({"head": 10, "freeze": "all_but_head", "l2sp": 0.01}).to_dict()["l2sp"]
    {'alpha': 0.01, 'beta': 0.0}
    """

    head: int | None = None
    freeze: Any = None
    unfreeze_every: int | None = None
    blocks: Any = "auto"
    discriminative: float | None = None
    groups: tuple[Any, ...] = ()
    l2sp: Any = None
    batchnorm: str = "train"
    probe_epochs: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.head is not None:
            _whole(self.head, "head", minimum=1)
        set_(self, "freeze", _normalize_freeze(self.freeze))
        if self.unfreeze_every is not None:
            _whole(self.unfreeze_every, "unfreeze_every", minimum=1)
        set_(self, "blocks", _normalize_blocks(self.blocks))
        if self.discriminative is not None:
            if not (_number(self.discriminative) and 0 < self.discriminative <= 1):
                raise ConfigError(f"discriminative must be a number in (0, 1] (the per-layer decay of the learning "
                                  f"rate), got {shorten_value(self.discriminative)}")
            set_(self, "discriminative", float(self.discriminative))
        set_(self, "groups", _normalize_groups(self.groups))
        set_(self, "l2sp", _normalize_l2sp(self.l2sp))
        if self.batchnorm not in BATCHNORM_MODES:
            raise ConfigError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, "
                              f"got {shorten_value(self.batchnorm)}")
        _whole(self.probe_epochs, "probe_epochs", minimum=0)
        if self.freeze == "all" and self.head is None:
            raise ConfigError("freeze='all' without a new head leaves nothing to train; give head=N, or freeze "
                              "'all_but_head'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TransferSettings":
        """Settings from a mapping of their fields (a config's ``transfer:`` section); unknown keys are refused."""
        if data is None:
            return cls()
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"transfer settings must be a mapping, got {shorten_value(data)}")
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, 1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
                raise ConfigError(f"unknown transfer setting {key!r}{hint}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, every field (what the lineage records and a resume compares)."""
        return {"head": self.head, "freeze": list(self.freeze) if isinstance(self.freeze, tuple) else self.freeze,
                "unfreeze_every": self.unfreeze_every,
                "blocks": list(self.blocks) if isinstance(self.blocks, tuple) else self.blocks,
                "discriminative": self.discriminative,
                "groups": [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in self.groups],
                "l2sp": dict(self.l2sp) if self.l2sp else None, "batchnorm": self.batchnorm,
                "probe_epochs": self.probe_epochs}

    def replace(self, **changes: Any) -> "TransferSettings":
        return dataclasses.replace(self, **changes)

    @property
    def staged(self) -> bool:
        """Whether some layers join the training later (linear probe or gradual unfreezing)."""
        return bool(self.probe_epochs) or self.unfreeze_every is not None


def transfer_field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(TransferSettings))

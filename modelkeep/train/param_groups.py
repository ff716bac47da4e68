"""Parameter-group rules: which parameters train, at which learning rate and weight decay, and which wait.

A ``GroupRule`` selects parameters by a glob pattern on their names or by a range of the model's
top-level layers, and gives them a learning-rate scale, a weight decay, or ``frozen=True``.
``ParameterGroups`` resolves a list of rules (first matching rule wins) into ``torch.optim`` parameter
groups. Frozen parameters are not dropped: they are held out of the optimizer and remembered, so
gradual unfreezing can add them later with ``add_to`` without disturbing the optimizer state of the
parameters already training, and ``state_dict``/``load_state_dict`` let a resumed run rebuild exactly
the same groups in the same order. ``discriminative_rules`` expresses per-layer learning rates
(``η_ℓ = η₀·α^(L−ℓ)``) as rules.

"Frozen" means ``requires_grad=False``, one notion for the whole package: resolving applies the
rules' freezing to the model, and ``add_to`` lifts it. This module imports only torch, the standard
library and ``modelkeep.errors``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from ..errors import ConfigError

__all__ = ["GroupRule", "ParameterGroups", "discriminative_rules", "resolve_groups", "top_level_layers"]


@dataclass(frozen=True)
class GroupRule:
    """Parameters selected by ``pattern`` (a glob on names such as ``"layers.conv1.*"``) or by ``layers``
    (``(start, stop)``, a Python slice over ``top_level_layers(model)``; ``stop`` may be ``None``),
    exactly one of the two, and what they get: ``lr_scale`` times the base learning rate,
    ``weight_decay`` (``None``: the optimizer's), or ``frozen``.

    A frozen rule's ``lr_scale`` and ``weight_decay`` apply once its parameters are unfrozen with
    ``ParameterGroups.add_to``: ``GroupRule("features.*", lr_scale=0.1, frozen=True)`` means "frozen
    for now, a tenth of the learning rate later".
    """

    pattern: str | None = None
    layers: tuple[int, int | None] | None = None
    lr_scale: float = 1.0
    weight_decay: float | None = None
    frozen: bool = False

    def __post_init__(self) -> None:
        if (self.pattern is None) == (self.layers is None):
            raise ConfigError(f"a group rule selects by pattern or by layers, exactly one; got pattern="
                              f"{self.pattern!r}, layers={self.layers!r}")
        if self.layers is not None:
            ok = (isinstance(self.layers, (tuple, list)) and len(self.layers) == 2
                  and all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in self.layers))
            if not ok:
                raise ConfigError(f"a group rule's layers must be (start, stop) integers, got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(self.layers))
        if not (isinstance(self.lr_scale, (int, float)) and self.lr_scale > 0):
            raise ConfigError(f"a group rule's lr_scale must be a number > 0 (freeze with frozen=True), "
                              f"got {self.lr_scale!r}")
        if self.weight_decay is not None and not (isinstance(self.weight_decay, (int, float))
                                                  and self.weight_decay >= 0):
            raise ConfigError(f"a group rule's weight_decay must be a number >= 0 or None, got {self.weight_decay!r}")

    def describe(self) -> str:
        return f"pattern {self.pattern!r}" if self.pattern is not None else f"layers {self.layers!r}"


def top_level_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The model's layers as ``(name prefix, module)``, in order: what ``GroupRule.layers`` indexes.

    Going down from the model, the first level with more than one child: a ``Sequential``'s
    children; a spec-built module's ``layers.<name>`` entries (its one child is the ``layers``
    dictionary); a wrapper's inner model's children. A module without children is one layer.
    """
    prefix, module = "", model
    while True:
        children = list(module.named_children())
        if len(children) == 1 and next(children[0][1].children(), None) is not None:
            prefix, module = f"{prefix}{children[0][0]}.", children[0][1]
            continue
        if not children:
            return [(prefix.rstrip("."), module)]
        return [(f"{prefix}{name}", child) for name, child in children]


def _layer_of(names: Sequence[str], layers: Sequence[tuple[str, torch.nn.Module]]) -> dict[str, int]:
    """Layer index of every parameter name that lies inside one of ``layers``."""
    found: dict[str, int] = {}
    for index, (prefix, _) in enumerate(layers):
        for name in names:
            if prefix == "" or name.startswith(prefix + "."):
                found.setdefault(name, index)
    return found


@dataclass(frozen=True)
class _Group:
    """One resolved group: parameter names (in model order) and what they get."""

    names: tuple[str, ...]
    lr_scale: float = 1.0
    weight_decay: float | None = None

    def as_state(self) -> dict[str, Any]:
        return {"names": list(self.names), "lr_scale": self.lr_scale, "weight_decay": self.weight_decay}


def _match(model: torch.nn.Module, rules: Sequence[GroupRule]) -> dict[str, int | None]:
    """For every parameter name, the index of the first rule it matches (``None``: none matches)."""
    names = [name for name, _ in model.named_parameters()]
    layers = top_level_layers(model)
    layer_of = _layer_of(names, layers)
    owner: dict[str, int | None] = dict.fromkeys(names)
    for index, rule in enumerate(rules):
        if rule.pattern is not None:
            hits = [n for n in names if fnmatch.fnmatchcase(n, rule.pattern)]
        else:
            chosen = set(range(len(layers))[slice(*rule.layers)])
            hits = [n for n in names if layer_of.get(n) in chosen]
        if not hits:
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise ConfigError(f"group rule {index} ({rule.describe()}) matches no parameter; the model has "
                              f"{len(layers)} top-level layers and parameters named like {shown}")
        for name in hits:
            if owner[name] is None:
                owner[name] = index
    return owner


class ParameterGroups:
    """The resolution of ``rules`` over ``model``: the optimizer's groups and the frozen parameters held out.

    ``model`` is the unwrapped module; parameter names are those of ``model.named_parameters()``.
    Groups come one per rule in rule order, then one for the parameters no rule matches; a group
    without trainable parameters is left out. A parameter is held out (frozen) when its rule says
    ``frozen`` — resolution then sets ``requires_grad=False`` on it — or when it already has
    ``requires_grad=False``; it keeps its rule's ``lr_scale`` and ``weight_decay`` for later.

    Call order: build before the optimizer; ``make_optimizer(name, groups.param_groups(), lr)``;
    ``add_to(optimizer, ...)`` whenever parameters are unfrozen; ``state_dict()`` at each checkpoint.
    On resume: build from the same rules, ``load_state_dict(state)``, then build the optimizer from
    ``param_groups()`` (or, with an optimizer already built from the initial groups, call
    ``add_missing_to(optimizer)``), then load the optimizer's state.

    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> groups = ParameterGroups(model, [GroupRule(layers=(0, 1), frozen=True, lr_scale=0.1)], learning_rate=1e-2)
    >>> optimizer = torch.optim.Adam(groups.param_groups())
    >>> groups.frozen_names()
    ['0.weight', '0.bias']
    >>> added = groups.add_to(optimizer, "0.*")       # later: unfreeze the first layer at a tenth of the rate
    >>> [g["lr"] for g in optimizer.param_groups]
    [0.01, 0.001]
    """

    def __init__(self, model: torch.nn.Module, rules: Sequence[GroupRule] = (), *, learning_rate: float,
                 weight_decay: float | None = None) -> None:
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise ConfigError(f"learning_rate must be a positive number, got {learning_rate!r}")
        self.model = model
        self.rules = tuple(rules)
        self.learning_rate = float(learning_rate)
        self.weight_decay = weight_decay
        parameters = dict(model.named_parameters())
        owner = _match(model, self.rules)
        default = GroupRule("*")
        buckets: dict[int | None, list[str]] = {}
        self._held: dict[str, _Group] = {}  # frozen name -> the settings it will join with
        for name, p in parameters.items():
            index = owner[name]
            rule = self.rules[index] if index is not None else default
            if rule.frozen:
                p.requires_grad_(False)
            if p.requires_grad:
                buckets.setdefault(index, []).append(name)
            else:
                self._held[name] = _Group((), rule.lr_scale, rule.weight_decay)
        order = [i for i in range(len(self.rules)) if i in buckets] + ([None] if None in buckets else [])
        self._groups = [_Group(tuple(buckets[i]), *self._settings(i, default)) for i in order]

    def _settings(self, index: int | None, default: GroupRule) -> tuple[float, float | None]:
        rule = self.rules[index] if index is not None else default
        return rule.lr_scale, rule.weight_decay

    def _parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    def _as_dict(self, group: _Group, parameters: dict[str, torch.nn.Parameter]) -> dict[str, Any]:
        out: dict[str, Any] = {"params": [parameters[n] for n in group.names],
                               "lr": self.learning_rate * group.lr_scale}
        decay = group.weight_decay if group.weight_decay is not None else self.weight_decay
        if decay is not None:
            out["weight_decay"] = decay
        return out

    def param_groups(self) -> list[dict[str, Any]]:
        """``torch.optim`` parameter groups (``params``, ``lr``, and ``weight_decay`` when one is set), in order."""
        parameters = self._parameters()
        return [self._as_dict(group, parameters) for group in self._groups]

    def frozen_names(self) -> list[str]:
        """Names of the parameters held out of the optimizer, in model order."""
        return [name for name in self._parameters() if name in self._held]

    def describe(self) -> list[dict[str, Any]]:
        """One row per parameter: ``name``, ``group`` (index in the optimizer, ``None`` if frozen), ``lr``,
        ``weight_decay`` (``None``: the optimizer's default) and ``frozen``."""
        group_of = {n: (i, g) for i, g in enumerate(self._groups) for n in g.names}
        rows = []
        for name in self._parameters():
            index, group = group_of.get(name, (None, self._held.get(name)))
            if group is None:
                continue
            decay = group.weight_decay if group.weight_decay is not None else self.weight_decay
            rows.append({"name": name, "group": index, "lr": self.learning_rate * group.lr_scale,
                         "weight_decay": decay, "frozen": index is None})
        return rows

    # ------------------------------------------------------------------------------------------ unfreezing

    def _requested(self, names_or_params: str | Iterable[str | torch.Tensor]) -> list[str]:
        parameters = self._parameters()
        by_identity = {id(p): n for n, p in parameters.items()}
        items = [names_or_params] if isinstance(names_or_params, (str, torch.Tensor)) else list(names_or_params)
        wanted: set[str] = set()
        for item in items:
            if isinstance(item, torch.Tensor):
                if id(item) not in by_identity:
                    raise ConfigError(f"add_to: a tensor of shape {tuple(item.shape)} is not a parameter of the model")
                wanted.add(by_identity[id(item)])
                continue
            hits = [n for n in parameters if fnmatch.fnmatchcase(n, str(item))]
            if not hits:
                raise ConfigError(f"add_to: {item!r} matches no parameter name; names look like "
                                  f"{', '.join(list(parameters)[:4])}")
            wanted.update(hits)
        return [n for n in parameters if n in wanted and n in self._held]

    def _check_optimizer(self, optimizer: torch.optim.Optimizer, count: int, *, restoring: bool = False) -> None:
        parameters = self._parameters()
        expected = [[id(parameters[n]) for n in g.names] for g in self._groups[:count]]
        actual = [[id(p) for p in g["params"]] for g in optimizer.param_groups[:count]]
        if len(optimizer.param_groups) < count or expected != actual:
            if restoring:
                raise ConfigError("the checkpoint's parameter groups do not start like this run's optimizer; resume "
                                  "with the same group rules and the same frozen parameters as the checkpointed run")
            raise ConfigError("the optimizer was not built from these parameter groups; build it with "
                              "make_optimizer(name, groups.param_groups(), learning_rate)")

    def add_to(self, optimizer: torch.optim.Optimizer, names_or_params: str | Iterable[str | torch.Tensor],
               rule: GroupRule | None = None) -> list[dict[str, Any]]:
        """Unfreeze parameters and add them to ``optimizer`` as new groups; returns the groups added.

        ``names_or_params``: a glob pattern or name, or an iterable of them or of parameters.
        Parameters already training are skipped, so the call can be repeated. They join with
        ``rule``'s ``lr_scale`` and ``weight_decay`` (one group), or, without ``rule``, with the
        settings of the rule that froze them (one group per distinct setting, in model order).
        ``optimizer.add_param_group`` leaves the state (moments, step counts) of the parameters
        already in the optimizer untouched; the new ones get theirs at their first step.
        Each new group also carries ``initial_lr``, its learning rate before any schedule.
        """
        if rule is not None and rule.frozen:
            raise ConfigError("add_to: the rule given to join with says frozen=True; pass a rule without it")
        self._check_optimizer(optimizer, len(self._groups))
        names = self._requested(names_or_params)
        joining: dict[tuple[float, float | None], list[str]] = {}
        for name in names:
            settings = self._held[name] if rule is None else _Group((), rule.lr_scale, rule.weight_decay)
            joining.setdefault((settings.lr_scale, settings.weight_decay), []).append(name)
        new_groups = [_Group(tuple(members), *key) for key, members in joining.items()]
        return self._join(optimizer, new_groups)

    def _join(self, optimizer: torch.optim.Optimizer, new_groups: Sequence[_Group], *,
              record: bool = True) -> list[dict[str, Any]]:
        parameters = self._parameters()
        for group in new_groups:
            for name in group.names:
                parameters[name].requires_grad_(True)
                self._held.pop(name, None)
            entry = self._as_dict(group, parameters)
            entry["initial_lr"] = entry["lr"]
            optimizer.add_param_group(entry)
            if record:
                self._groups.append(group)
        return optimizer.param_groups[len(optimizer.param_groups) - len(new_groups):]

    # ------------------------------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """The groups in order and the held-out parameters with their later settings (JSON-safe)."""
        held = [{"name": n, "lr_scale": g.lr_scale, "weight_decay": g.weight_decay} for n, g in self._held.items()]
        return {"groups": [g.as_state() for g in self._groups], "frozen": held}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take the layout of ``state`` (a checkpoint's): the same groups in the same order, the same frozen
        parameters, and ``requires_grad`` set on the model to match."""
        parameters = self._parameters()
        groups = [_Group(tuple(g["names"]), float(g["lr_scale"]), g["weight_decay"]) for g in state["groups"]]
        held = {h["name"]: _Group((), float(h["lr_scale"]), h["weight_decay"]) for h in state["frozen"]}
        listed = [n for g in groups for n in g.names] + list(held)
        unknown = sorted(set(listed) - set(parameters))
        missing = sorted(set(parameters) - set(listed))
        if unknown or missing or len(listed) != len(set(listed)):
            raise ConfigError(f"the checkpoint's parameter groups do not fit this model (unknown {unknown[:4]}, "
                              f"missing {missing[:4]}); resume with the model the checkpoint was trained with")
        for group in groups:
            for name in group.names:
                parameters[name].requires_grad_(True)
        for name in held:
            parameters[name].requires_grad_(False)
        self._groups, self._held = groups, held

    def add_missing_to(self, optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
        """Add to ``optimizer`` (built from the initial groups) the groups it lacks after ``load_state_dict``,
        in order, so that ``optimizer.load_state_dict`` then finds the layout it was saved with."""
        count = len(optimizer.param_groups)
        if count > len(self._groups):
            raise ConfigError(f"the optimizer has {count} parameter groups, more than the {len(self._groups)} "
                              "restored; build it from these parameter groups")
        self._check_optimizer(optimizer, count, restoring=True)
        return self._join(optimizer, self._groups[count:], record=False)


def resolve_groups(model: torch.nn.Module, rules: Sequence[GroupRule] = (), *, learning_rate: float,
                   weight_decay: float | None = None) -> list[dict[str, Any]]:
    """``ParameterGroups(model, rules, ...).param_groups()``: the ``torch.optim`` groups of ``rules``
    (applying their freezing to the model); use ``ParameterGroups`` to unfreeze later or resume."""
    return ParameterGroups(model, rules, learning_rate=learning_rate, weight_decay=weight_decay).param_groups()


def discriminative_rules(model: torch.nn.Module, decay: float, *,
                         blocks: Sequence[str | Sequence[str]] | None = None) -> list[GroupRule]:
    """Per-layer learning rates decaying from the head to the input: ``η_ℓ = η₀·decay^(L−ℓ)``, as rules.

    The layers, numbered ``ℓ = 1..L`` from the input, are the ``top_level_layers(model)`` that have
    parameters (activations and pooling are not counted), or, with ``blocks``, the given blocks in
    input-to-head order, each a glob pattern or a list of them (``["layers.conv1", "layers.bn1"]``):
    a spec-built ResNet has one top-level layer per convolution, and per-stage rates read better.
    The last (the head) gets the base rate ``η₀``, the one before ``η₀·decay``, and so on (ULMFiT
    uses ``decay = 1/2.6``).

    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    >>> [(r.layers, r.lr_scale) for r in discriminative_rules(model, 0.5)]
    [((0, 1), 0.5), ((2, 3), 1.0)]
    >>> [(r.pattern, r.lr_scale) for r in discriminative_rules(model, 0.5, blocks=["0.*", "2.*"])]
    [('0.*', 0.5), ('2.*', 1.0)]
    """
    if not (isinstance(decay, (int, float)) and decay > 0):
        raise ConfigError(f"the per-layer learning-rate decay must be a number > 0 (typically below 1), got {decay!r}")
    if blocks is not None:
        count = len(blocks)
        return [GroupRule(pattern, lr_scale=float(decay) ** (count - 1 - rank))
                for rank, block in enumerate(blocks) for pattern in ([block] if isinstance(block, str) else block)]
    indexed = [i for i, (_, module) in enumerate(top_level_layers(model))
               if next(module.parameters(), None) is not None]
    count = len(indexed)
    return [GroupRule(layers=(i, i + 1), lr_scale=float(decay) ** (count - 1 - rank)) for rank, i in enumerate(indexed)]

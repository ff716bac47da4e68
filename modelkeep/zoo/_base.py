"""The zoo's machinery: ``ZooModel`` entries in the ``ZOO`` registry, and ``get_spec``.

A zoo model is a config (a frozen pydantic dataclass: unknown or ill-typed
overrides are errors) and a pure function from that config to a spec dict. No
model here is code that must be imported to load a saved file: the spec it
returns is the whole architecture.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import ValidationError

from .._registry import Registry
from ..errors import SpecError
from ..spec.model import ModelSpec


@dataclass(frozen=True)
class ZooModel:
    """One named architecture: its config class, the defaults for this name, and the spec builder."""

    name: str
    config: type
    make: Callable[[Any], dict[str, Any]]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    # overrides that make it small enough to run forward and backward in tests
    small: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """Every config field with its value for this model (what ``--set`` can change)."""
        return dataclasses.asdict(self.configure())

    def configure(self, **overrides: Any) -> Any:
        fields = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise SpecError(
                f"zoo model {self.name!r} has no option(s) {unknown}; its options are {sorted(fields)}"
            )
        try:
            return self.config(**{**self.defaults, **overrides})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r:.40})" for e in exc.errors()
            )
            raise SpecError(f"zoo model {self.name!r}: bad option value(s): {problems}") from None

    def spec_dict(self, **overrides: Any) -> dict[str, Any]:
        return self.make(self.configure(**overrides))

    def spec(self, **overrides: Any) -> ModelSpec:
        return ModelSpec.from_dict(self.spec_dict(**overrides))


ZOO: Registry[ZooModel] = Registry("zoo model", SpecError)


def register_model(name: str, config: type, make: Callable[[Any], dict[str, Any]], description: str, *,
                   small: dict[str, Any] | None = None, **defaults: Any) -> ZooModel:
    """Add a named architecture to the zoo; ``defaults`` are this name's config values."""
    entry = ZooModel(name, config, make, description, defaults, small or {})
    ZOO.register(name, entry)
    return entry


def get_spec(name: str, **overrides: Any) -> ModelSpec:
    """The validated spec of zoo model ``name`` with config ``overrides`` (``get_spec("vgg16", num_classes=10)``)."""
    return ZOO.get(name).spec(**overrides)


def list_models() -> list[str]:
    """Names of every zoo model, sorted."""
    return ZOO.names()

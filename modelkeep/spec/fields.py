"""The fields of a layer kind: declared like a pydantic model, checked in plain Python when they can be.

A kind lists what its layers accept as annotated class attributes, with
constraints given by ``Field``, and may add validators, exactly as it would in
pydantic (only ``import`` lines differ)::

    from modelkeep.spec.fields import Field, Fields, field_validator

    class ScaleFields(Fields):
        factor: float = Field(gt=0.0)
        mode: Literal["row", "column"] = "row"

        @field_validator("mode")
        @classmethod
        def _known(cls, value: str) -> str:
            return value

Why not a pydantic model: importing pydantic and building a schema per kind
costs more than everything else ``modelkeep inspect`` does. So validation has
two paths that cannot disagree:

- the fast path (here) accepts a layer only when every value is already in the
  form pydantic would return unchanged (an ``int`` for ``int``, a list of ints
  for ``list[int]``, one of the strings of a ``Literal``), meets its
  constraints and passes the validators. That is what a saved file holds.
- anything else (a value to coerce, such as ``"8"`` for an ``int``, or to
  refuse) goes to ``_pydantic_fields``, which builds the pydantic model of the
  same declaration on first use, so coercion and every error message are
  pydantic's own.

The fast path decides nothing itself: whatever it is not sure of, it hands on.
Unknown fields are errors, never ignored, and a ``Fields`` object is frozen.
This module never imports pydantic.
"""
from __future__ import annotations

import copy
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

from ..errors import SpecError


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
_IMMUTABLE = (int, float, bool, str, bytes, type(None), tuple, frozenset)


@dataclass(frozen=True)
class FieldInfo:
    """A field's default (``REQUIRED`` when it has none) and its constraints, as ``pydantic.Field`` takes them."""

    default: Any = REQUIRED
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    min_length: int | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def constraints(self) -> dict[str, Any]:
        """The constraints that are set, by pydantic's names."""
        names = ("gt", "ge", "lt", "le", "min_length")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def Field(default: Any = REQUIRED, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
          le: float | None = None, min_length: int | None = None) -> Any:
    """A field with constraints: ``units: int = Field(gt=0)``, ``rate: float = Field(default=0.1, ge=0, lt=1)``."""
    return FieldInfo(default, gt, ge, lt, le, min_length)


@dataclass(frozen=True)
class _Validator:
    """A validator as pydantic's ``field_validator`` / ``model_validator(mode="after")`` declare it."""

    func: Callable[..., Any]
    fields: tuple[str, ...] = ()  # empty: a model validator

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., Any]:
        if self.fields:
            return types.MethodType(self.func, owner)
        return self.func if obj is None else types.MethodType(self.func, obj)


def field_validator(*names: str) -> Callable[[Any], _Validator]:
    """Check (or normalise) the given fields after their types: ``(cls, value) -> value``; raise ``ValueError``."""
    def mark(func: Any) -> _Validator:
        return _Validator(func.__func__ if isinstance(func, classmethod) else func, names)

    return mark


def model_validator(*, mode: str) -> Callable[[Callable[..., Any]], _Validator]:
    """Check the fields together once each is valid: ``(self) -> self``; only ``mode="after"`` exists here."""
    if mode != "after":
        raise TypeError(f"model_validator supports mode='after' only, got mode={mode!r}")
    return lambda func: _Validator(func)


@dataclass(frozen=True)
class _Slot:
    """One field with its resolved annotation: what the fast path accepts as already final."""

    annotation: Any
    info: FieldInfo
    accepts_as_is: Callable[[Any], bool] | None  # None: a type the fast path does not know; always pydantic
    is_any: bool  # an ``Any`` field: pydantic's JSON dump turns its non-finite floats into null


class Fields:
    """Base of every kind's fields: a frozen set of validated values (see the module docstring)."""

    model_fields: typing.ClassVar[dict[str, FieldInfo]] = {}
    _field_validators: typing.ClassVar[dict[str, _Validator]] = {}
    _model_validators: typing.ClassVar[dict[str, _Validator]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared: dict[str, FieldInfo] = {}
        validators: dict[str, _Validator] = {}
        for base in reversed(cls.__mro__):  # pydantic's order: a base's fields first
            for name, annotation in base.__dict__.get("__annotations__", {}).items():
                if name.startswith("_") or _is_class_var(annotation):
                    continue
                value = base.__dict__.get(name, REQUIRED)
                declared[name] = value if isinstance(value, FieldInfo) else FieldInfo(value)
            validators.update((k, v) for k, v in base.__dict__.items() if isinstance(v, _Validator))
        cls.model_fields = declared
        cls._field_validators = {k: v for k, v in validators.items() if v.fields}
        cls._model_validators = {k: v for k, v in validators.items() if not v.fields}

    def __init__(self, **data: Any) -> None:
        values = _fast_values(type(self), data)
        if values is not None:
            self.__dict__.update(values)
            if self._passes_model_validators():
                return
            self.__dict__.clear()
        from ._pydantic_fields import validate  # the slow path: pydantic coerces or says what is wrong

        self.__dict__.update(validate(type(self), data))

    @classmethod
    def _slots(cls) -> dict[str, _Slot]:
        """The resolved fields, built on first use (annotations are strings until then)."""
        cached = cls.__dict__.get("_resolved_slots")
        if cached is None:
            hints = typing.get_type_hints(cls)
            cached = {}
            for name, info in cls.model_fields.items():
                annotation = hints[name]
                is_any = annotation is Any or Any in typing.get_args(annotation)
                cached[name] = _Slot(annotation, info, _as_is_check(annotation), is_any)
            type.__setattr__(cls, "_resolved_slots", cached)
        return cached

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> "Fields":
        """An instance from values already validated (pydantic's, on the slow path): nothing is checked."""
        fields = object.__new__(cls)
        fields.__dict__.update(values)
        return fields

    def _passes_model_validators(self) -> bool:
        try:
            for validator in self._model_validators.values():
                validator.func(self)
        except Exception:  # noqa: BLE001 - pydantic decides what the failure means
            return False
        return True

    def model_dump(self, *, mode: str = "python", exclude_defaults: bool = False) -> dict[str, Any]:
        """The values by name, as pydantic dumps them (``mode="json"``: lists, and JSON-safe ``Any`` fields)."""
        slots = self._slots() if mode == "json" else {}
        out = {}
        for name, info in self.model_fields.items():
            value = self.__dict__[name]
            if exclude_defaults and not info.required and value == info.default:
                continue
            if mode == "json":
                value = _json_value(value, non_finite_to_none=slots[name].is_any)
            out[name] = value
        return out

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__qualname__} is frozen; make a new spec with ModelSpec.replace")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__qualname__} is frozen; make a new spec with ModelSpec.replace")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fields):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def make_fields(fields_class: type, data: dict[str, Any]) -> Any:
    """Validated fields of a kind: its ``Fields`` class, or a pydantic model (kinds written for pydantic)."""
    if issubclass(fields_class, Fields):
        return fields_class(**data)
    from ._pydantic_fields import validate_pydantic_model

    return validate_pydantic_model(fields_class, data)


# --------------------------------------------------------------------------- the fast path

def _fast_values(cls: type[Fields], data: dict[str, Any]) -> dict[str, Any] | None:
    """Every field's value if all of ``data`` is already final and valid, else ``None`` (ask pydantic)."""
    slots = cls._slots()
    if not data.keys() <= slots.keys():
        return None
    values: dict[str, Any] = {}
    for name, slot in slots.items():
        if name in data:
            value = data[name]
            if slot.accepts_as_is is None or not slot.accepts_as_is(value) or not _meets(slot.info, value):
                return None
        elif slot.info.required:
            return None
        else:
            value = slot.info.default
            value = value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)
        values[name] = value
    try:
        for validator in cls._field_validators.values():
            for name in validator.fields:
                if name in data:  # as in pydantic, a default is not validated
                    values[name] = validator.func(cls, values[name])
    except Exception:  # noqa: BLE001 - pydantic decides what the failure means
        return None
    return values


def _meets(info: FieldInfo, value: Any) -> bool:
    """Whether ``value`` (already of its final type) meets the field's constraints; unsure counts as no."""
    if value is None:
        return True
    numeric = [(bound, test) for bound, test in ((info.gt, _gt), (info.ge, _ge), (info.lt, _lt), (info.le, _le))
               if bound is not None]
    if numeric:
        if type(value) not in (int, float) or math.isnan(value):
            return False
        if not all(test(value, bound) for bound, test in numeric):
            return False
    if info.min_length is not None:
        return type(value) in (list, str) and len(value) >= info.min_length
    return True


def _gt(a: float, b: float) -> bool:
    return a > b


def _ge(a: float, b: float) -> bool:
    return a >= b


def _lt(a: float, b: float) -> bool:
    return a < b


def _le(a: float, b: float) -> bool:
    return a <= b


def _as_is_check(annotation: Any) -> Callable[[Any], bool] | None:
    """A test for values pydantic would return unchanged for ``annotation``; ``None`` for types not handled here."""
    if annotation is Any or annotation is object:
        return lambda value: True
    if annotation is type(None):
        return lambda value: value is None
    if annotation in (int, float, bool, str):
        return lambda value: type(value) is annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return lambda value: any(type(value) is type(choice) and value == choice for choice in args)
    if origin is Union or origin is types.UnionType:
        checks = [_as_is_check(arg) for arg in args]
        if any(check is None for check in checks):
            return None
        return lambda value: any(check(value) for check in checks)
    if origin is list and len(args) == 1:
        item = _as_is_check(args[0])
        if item is None:
            return None
        return lambda value: type(value) is list and all(item(v) for v in value)
    return None


def _json_value(value: Any, *, non_finite_to_none: bool) -> Any:
    if isinstance(value, (list, tuple)):
        return [_json_value(v, non_finite_to_none=non_finite_to_none) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v, non_finite_to_none=non_finite_to_none) for k, v in value.items()}
    if non_finite_to_none and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_class_var(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return typing.get_origin(annotation) is typing.ClassVar


__all__ = ["REQUIRED", "Field", "FieldInfo", "Fields", "field_validator", "make_fields", "model_validator"]

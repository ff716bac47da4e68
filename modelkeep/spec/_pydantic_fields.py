"""The slow path of ``fields.py``: the pydantic model of a ``Fields`` declaration, for coercion and errors.

Imported only when a layer's values are not already in their final form (or
are wrong), so reading a file that modelkeep wrote never imports pydantic. The
model is built once per ``Fields`` class from the same annotations,
constraints and validators, so what pydantic accepts, how it coerces and what
it says are unchanged. Its errors become one ``SpecError`` that names each
field and what was received.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic import Field as PydanticField
from pydantic import field_validator, model_validator

from ..errors import SpecError

# ``Fields`` classes are taken as they come (duck-typed): this module is imported by ``fields.py``, never
# the other way round, so that the spec layer's import graph has no cycle.
_MODELS: dict[type, type[BaseModel]] = {}


def validate(cls: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The validated values of ``cls`` for ``data``, coerced by pydantic, or a ``SpecError`` saying what is wrong."""
    instance = validate_pydantic_model(pydantic_model(cls), data)
    return {name: getattr(instance, name) for name in cls.model_fields}


def validate_pydantic_model(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """``model(**data)``, with pydantic's errors as one ``SpecError``."""
    try:
        return model(**data)
    except ValidationError as exc:
        raise SpecError(describe_validation(exc)) from None


def pydantic_model(cls: Any) -> type[BaseModel]:
    """The pydantic model equivalent to ``cls`` (same fields in the same order, same validators), built once."""
    model = _MODELS.get(cls)
    if model is None:
        namespace: dict[str, Any] = {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__annotations__": {},
            "model_config": ConfigDict(extra="forbid", frozen=True),
        }
        for name, slot in cls._slots().items():
            namespace["__annotations__"][name] = slot.annotation
            default = ... if slot.info.required else slot.info.default
            namespace[name] = PydanticField(default, **slot.info.constraints())
        for attribute, validator in cls._field_validators.items():
            namespace[attribute] = field_validator(*validator.fields)(_field_check(cls, validator))
        for attribute, validator in cls._model_validators.items():
            namespace[attribute] = model_validator(mode="after")(_model_check(cls, validator))
        model = _MODELS[cls] = type(BaseModel)(cls.__name__, (BaseModel,), namespace)
    return model


def _field_check(cls: Any, validator: Any) -> classmethod:
    def check(model: type[BaseModel], value: Any) -> Any:
        return validator.func(cls, value)  # the validator sees the class it was declared on, as on the fast path

    return classmethod(check)


def _model_check(cls: Any, validator: Any) -> Any:
    def check(self: BaseModel) -> BaseModel:
        validator.func(cls._from_values({name: getattr(self, name) for name in cls.model_fields}))
        return self

    return check


def describe_validation(exc: ValidationError) -> str:
    """Each of pydantic's errors in one line: the field, what is wrong, what was received."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "fields"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown field {loc!r}")
        elif error["type"] == "value_error" and "error" in error.get("ctx", {}):
            where = f"field {loc!r}: " if error["loc"] else ""
            parts.append(f"{where}{error['ctx']['error']}")
        else:
            parts.append(f"field {loc!r}: {error['msg']} (got {error.get('input')!r:.60})")
    return "; ".join(parts)

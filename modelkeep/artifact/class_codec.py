"""The ``class`` architecture: a user-defined ``torch.nn.Module`` named by reference, never pickled.

Document: ``{"type": "class", "class": "package.module:QualName", "init":
{...}}`` (docs/format.md, 3.1). Decoding imports the named module only when
the caller passes ``trust_code=True`` (importing a module runs its top-level
code, so that permission is needed before the import, not only before the
call), or uses the caller's own ``model_class=`` and imports nothing. torch is
imported only inside the methods that build or check a module.
"""
from __future__ import annotations

import importlib
import json
import re
import warnings
from typing import Any, Mapping

from ..errors import ConfigError, FormatError, SpecError, TrustError
from .architecture import Description, Rebuilt, weight_rows
from .format import Header

# "package.module:Outer.Inner": dotted identifiers only, so the string can never be anything but a name.
CLASS_REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class UnimportableClassWarning(UserWarning):
    """A saved class cannot be imported by the program that will load it (it lives in ``__main__``)."""


NOTE = "a user-defined class: loading it needs trust_code=True or model_class="


def class_reference(document: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``("package.module:QualName", init_kwargs)`` of a class document, validated but not imported."""
    reference, init = document.get("class"), document.get("init", {})
    if document.get("type") != "class" or not isinstance(reference, str) or not CLASS_REFERENCE.match(reference):
        raise FormatError(
            f"a 'class' architecture needs 'class': 'package.module:QualName', got {str(reference)[:80]!r}"
        )
    if not isinstance(init, dict):
        raise FormatError(f"the 'init' arguments of class {reference} must be a JSON object")
    return reference, init


def _reference_of(cls: type) -> str:
    reference = f"{cls.__module__}:{cls.__qualname__}"
    if not CLASS_REFERENCE.match(reference):
        raise ConfigError(
            f"{reference} cannot be named in a file (a class defined inside a function is not importable); "
            "define the class at module level"
        )
    if cls.__module__ == "__main__":
        warnings.warn(
            f"{cls.__qualname__} is defined in __main__ (a script run directly, or a notebook), so the file names it "
            f"{reference!r}, which no other program can import: trust_code=True will not find it. Load the file with "
            f"load(path, model_class={cls.__qualname__}), or move the class into an importable module and save again",
            UnimportableClassWarning, stacklevel=4,
        )
    return reference


def _required_arguments(cls: type) -> set[str]:
    import inspect

    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters
            if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _constructor_arguments(model: Any, init: Mapping[str, Any] | None) -> dict[str, Any]:
    """``init`` (default ``model.get_config()``), checked to name every required argument and to be JSON."""
    if init is None:
        get_config = getattr(model, "get_config", None)
        init = get_config() if callable(get_config) else {}
    if not isinstance(init, Mapping):
        raise ConfigError(f"init= must be a dict of constructor keyword arguments, got {type(init).__name__}")
    needed = _required_arguments(type(model))
    if needed - set(init):
        raise SpecError(
            f"{type(model).__qualname__} has no spec, and rebuilding it needs its constructor arguments "
            f"{sorted(needed - set(init))}: pass init={{...}} (JSON values) to save(), give the class a get_config() "
            "method, or build the model from a spec with modelkeep.build()"
        )
    try:
        text = json.dumps(dict(init), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the constructor arguments of {type(model).__qualname__} must be JSON data (numbers, strings, lists, "
            f"dicts) so the file never holds a pickle; {exc}. Pass init= with JSON-only values"
        ) from None
    return json.loads(text)


def resolve_class(reference: str, where: object, trust_code: bool, model_class: type | None) -> type:
    """The class to build: the caller's ``model_class``, or (with ``trust_code``) the imported, checked reference."""
    import torch

    if model_class is not None:
        if not (isinstance(model_class, type) and issubclass(model_class, torch.nn.Module)):
            raise TypeError(f"model_class= must be a torch.nn.Module subclass, got {model_class!r}")
        return model_class
    if not trust_code:
        raise TrustError(
            f"{where} was saved from the user-defined class {reference}; rebuilding it means importing and running "
            f"that code, which modelkeep does only when you allow it: pass model_class=YourClass (imports nothing), "
            f"or trust_code=True only if you trust the file and the code: it imports the module "
            f"{reference.split(':')[0]!r} the file names, which runs that module's top-level code before the class "
            f"is even checked"
        )
    module_name, qualname = reference.split(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise FormatError(f"{where}: cannot import {reference} ({exc}); install the code that defines it") from None
    except AttributeError:
        raise FormatError(f"{where}: module {module_name!r} has no class {qualname!r}") from None
    if not (isinstance(target, type) and issubclass(target, torch.nn.Module)):
        raise TrustError(f"{where}: {reference} is not a torch.nn.Module subclass; refusing to call it")
    return target


def construct(cls: type, init: dict[str, Any], where: object, *, meta: bool = True) -> tuple[Any, bool]:
    """``cls(**init)``, on the meta device when ``meta`` and the class allows it (no memory for weights)."""
    import torch

    if meta:
        try:
            with torch.device("meta"):
                return cls(**init), True
        except Exception:  # noqa: BLE001 - some classes cannot be built on meta; retry on the CPU
            pass
    try:
        return cls(**init), False
    except Exception as exc:  # noqa: BLE001 - the class's own code failed on the file's arguments
        raise FormatError(
            f"{where}: {cls.__qualname__}(**{json.dumps(init)[:200]}) failed: {type(exc).__name__}: {exc}"
        ) from None


class ClassCodec:
    """``{"type": "class", "class": ..., "init": ...}``: a user's ``nn.Module`` class and its constructor arguments."""

    kind = "class"

    def encode(self, model: Any, *, spec: Any = None, init: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"type": "class", "class": _reference_of(type(model)), "init": _constructor_arguments(model, init)}

    def decode(self, document: Mapping[str, Any], *, where: object, trust_code: bool = False,
               model_class: type | None = None) -> Rebuilt:
        reference, init = class_reference(document)
        cls = resolve_class(reference, where, trust_code, model_class)
        module, on_meta = construct(cls, init, where)
        return Rebuilt(module, on_meta=on_meta, rebuild=lambda: construct(cls, init, where, meta=False)[0])

    def describe(self, document: Mapping[str, Any], header: Header) -> Description:
        reference, init = class_reference(document)
        rows = weight_rows(header)
        total = sum(row["parameters"] for row in rows)
        return Description({"type": "class", "class": reference, "init": init, "note": NOTE}, rows, total, total)


__all__ = ["CLASS_REFERENCE", "ClassCodec", "UnimportableClassWarning", "class_reference", "construct", "resolve_class"]

"""A lazily exported name never shares its name with a module of the same package: importing that module (as any
test or user code may) would set the package attribute to the module and shadow the function for good."""
from __future__ import annotations

import importlib
import pkgutil

import modelkeep


def _packages():
    yield modelkeep
    for info in pkgutil.walk_packages(modelkeep.__path__, "modelkeep."):
        if info.ispkg:
            yield importlib.import_module(info.name)


def test_no_exported_name_is_also_a_submodule_name():
    clashes = []
    for package in _packages():
        exports = getattr(package, "_EXPORTS", None)
        if not exports:
            continue
        submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
        clashes += [f"{package.__name__}.{name}" for name in exports if name in submodules]
    assert not clashes, f"exported names that are also submodules (rename the module): {clashes}"


def test_every_lazy_name_resolves_after_its_modules_are_imported():
    for package in _packages():
        for name, module in getattr(package, "_EXPORTS", {}).items():
            importlib.import_module(f"{package.__name__}.{module}" if package is not modelkeep
                                    else f"modelkeep.{module}")
            value = getattr(package, name)
            assert not (hasattr(value, "__path__") or type(value).__name__ == "module"), (package.__name__, name)

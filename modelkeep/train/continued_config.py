"""Continued training from a training config: ``continue: {from: FILE, old_test: DATA}`` or the
``--init-from``/``--old-test`` flags of ``modelkeep train`` (what ``run_training`` asks for).

It opens the parent, says how to read the config's data for it (its input shape and classes), reads
the old test set, and hands ``fit`` the options of a continued run (``continued.py`` does the rest).
The config's ``preprocessing`` is dropped: the file's fitted one stays. It never reads the config
module (which imports this one) and never trains.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError
from .continued import open_parent, read_options

__all__ = ["ContinuedRun", "continued_run", "read_old_test"]


@dataclass
class ContinuedRun:
    """What ``run_training`` needs to continue a saved model: the parent, how to read data for it, and the
    options it adds to ``fit`` (the config's ``preprocessing`` is dropped: the file's stays)."""

    parent: Any
    old_test: Any = None
    given: tuple[str, ...] = ()  # reader options the config's data section sets itself (they stay)

    @property
    def read_options(self) -> dict[str, Any]:
        return {key: value for key, value in read_options(self.parent).items() if key not in self.given}

    @property
    def fit_options(self) -> dict[str, Any]:
        return {"init_from": self.parent, "old_test": self.old_test, "preprocessing": None}


def continued_run(config: Any, init_from: Any = None, old_test: Any = None) -> ContinuedRun | None:
    """The config's continuation (``continue: {from: FILE, old_test: DATA}``, or the ``--init-from`` and
    ``--old-test`` flags, which win), or None for a run that starts from a new network.

    ``old_test`` is a dataset name, a file, or a mapping of ``name``/``path`` and reader options. When it
    is the data the parent recorded, the old test set is the test split the parent held out (its
    recorded fractions and seed); any other data is an old test set as a whole."""
    section = config.raw.get("continue") or {}
    if not isinstance(section, Mapping) or set(section) - {"from", "old_test"}:
        raise ConfigError("continue must be a mapping with 'from' (a model file) and optionally 'old_test' "
                          f"(data), got {str(section)[:80]}")
    init_from = init_from if init_from is not None else section.get("from")
    old_test = old_test if old_test is not None else section.get("old_test")
    if init_from is None:
        if old_test is not None:
            raise ConfigError("an old test set (--old-test, continue.old_test) needs a model to continue: "
                              "give --init-from FILE or continue.from")
        return None
    path = _config_path(config, init_from)
    parent = open_parent(path)
    data = config.raw.get("data")
    given = tuple(data) if isinstance(data, Mapping) else ()
    return ContinuedRun(parent, read_old_test(old_test, parent, config.base_dir) if old_test is not None else None,
                        given)


def _config_path(config: Any, value: Any) -> Any:
    """A path from the command line or the config: as given when it exists, else beside the config."""
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"continue.from must be a model file, got {str(value)[:80]}")
    path = os.fspath(value)
    if not os.path.exists(path) and os.path.exists(os.path.join(config.base_dir, path)):
        return os.path.join(config.base_dir, path)
    if not os.path.exists(path):
        from ..errors import ModelNotFoundError

        raise ModelNotFoundError(f"the model to continue, {path!r}, does not exist")
    return path


def read_old_test(source: Any, parent: Any, base_dir: Any = ".") -> Any:
    """The old test set (see ``continued_run``), read for the parent's input shape and classes."""
    from ..data.datasets import load_data
    from ..data.split import split_dataset

    options = dict(source) if isinstance(source, Mapping) else {"name": source}
    name = options.pop("name", None) or options.pop("path", None)
    if not isinstance(name, (str, os.PathLike)):
        raise ConfigError(f"old_test must be a dataset name, a file or a mapping with 'name' or 'path', got "
                          f"{str(source)[:80]}")
    name = os.fspath(name)
    if not os.path.exists(name) and os.path.exists(os.path.join(base_dir, name)):
        name = os.path.join(base_dir, name)
    recorded = (parent.manifest.hyperparameters or {}).get("data") or {}
    given = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ""
    same = str(recorded.get("source")) in (str(name), given)
    if same:
        options = {**dict(recorded.get("options") or {}), **options}
    options.pop("shape", None)  # the parent's input shape says the same
    dataset = load_data(name, **{**options, **read_options(parent)})
    if not same:
        return dataset
    fractions = tuple(recorded.get("split") or (0.8, 0.1, 0.1))
    return split_dataset(dataset, fractions=fractions, seed=int(recorded.get("split_seed", 0))).test

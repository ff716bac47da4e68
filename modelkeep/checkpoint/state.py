"""The training state as flat tensors plus one JSON document: capture and restore, never pickled.

A checkpoint holds the model weights, the optimizer, scheduler and gradient
scaler state, every random state (Python, NumPy's legacy global state, torch CPU
and CUDA, and named generators such as the data-order generator) and the state
of every other stateful object of the run (callbacks, regularizers, the
optimizer's parameter-group layout). ``capture`` turns all of it into

* ``tensors``: a flat ``{name: tensor}`` map (model weights under ``model/``,
  everything else under its section), still pointing at the *live* tensors;
  ``snapshot.SnapshotBuffers`` copies them before training moves on;
* ``tree``: a JSON-safe document in which every tensor is a reference
  ``{"__tensor__": name}``; floats that JSON cannot hold, tuples, non-string
  dictionary keys and NumPy arrays have explicit markers, so ``restore`` gets
  back exactly the Python objects that ``state_dict()`` returned.

Anything else (a function, a class instance) is refused with ``CheckpointError``
rather than pickled. This module never touches a file.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import CheckpointError

MODEL_PREFIX = "model/"


@runtime_checkable
class Stateful(Protocol):
    """Anything whose state a checkpoint carries: callbacks, schedulers, scalers, regularizers.

    The package's one such protocol (``modelkeep.train`` uses this one too).

    ``state_dict()`` returns tensors, numbers, strings, lists, tuples and dicts
    only; ``load_state_dict(state)`` receives that structure back.

    >>> class EarlyStopping:
    ...     def __init__(self): self.best, self.wait = math.inf, 0
    ...     def state_dict(self): return {"best": self.best, "wait": self.wait}
    ...     def load_state_dict(self, state): self.best, self.wait = state["best"], state["wait"]
    """

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


@dataclass(frozen=True)
class Position:
    """Where training is: the next thing to run is batch ``batch`` of epoch ``epoch`` (both 0-based).

    ``step`` counts optimizer steps done in total. A checkpoint taken after the
    last batch of an epoch but before its end-of-epoch work (validation,
    callbacks) has ``batch`` equal to the number of batches per epoch; one taken
    after that work has ``epoch + 1`` and ``batch == 0``.
    """

    epoch: int
    batch: int
    step: int

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step}


@dataclass
class CheckpointState:
    """The live objects a checkpoint captures and restores; built once, before the loop.

    (Not to be confused with the training loop's position, ``modelkeep.train.LoopState``,
    which is what callbacks see.)

    ``callbacks`` (any stateful object of the run: callbacks, regularizers),
    ``structure`` and ``generators`` are keyed by a stable name (the name is how
    restore finds each one again). ``structure`` holds the objects that shape the
    optimizer (its parameter-group layout, which grows when parameters are unfrozen
    mid-run): they are restored before the optimizer, so its saved state finds the
    groups it was saved with; a checkpoint written before a structure entry existed
    restores without it (the initial layout). Generators may be ``torch.Generator``
    or ``numpy.random.Generator`` objects.
    """

    model: torch.nn.Module
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    callbacks: Mapping[str, Stateful] = field(default_factory=dict)
    generators: Mapping[str, Any] = field(default_factory=dict)
    structure: Mapping[str, Stateful] = field(default_factory=dict)


# --------------------------------------------------------------------------- JSON-safe trees


class _Encoder:
    def __init__(self, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        self.prefix = prefix
        self.tensors = tensors

    def _tensor_name(self, path: list[str]) -> str:
        name = self.prefix + "/".join(path)
        base, n = name, 1
        while name in self.tensors:
            n += 1
            name = f"{base}#{n}"
        return name

    def encode(self, value: Any, path: list[str]) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, torch.Tensor):
            name = self._tensor_name(path)
            self.tensors[name] = value.detach()
            return {"__tensor__": name}
        if isinstance(value, np.ndarray):
            name = self._tensor_name(path)
            self.tensors[name] = torch.from_numpy(np.ascontiguousarray(value).copy())
            return {"__ndarray__": name}
        if isinstance(value, np.generic):
            return self.encode(value.item(), path)
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, path + [str(i)]) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, path + [str(i)]) for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: self.encode(v, path + [k]) for k, v in value.items()}
            return {"__dict__": [[self.encode(k, path + ["key"]), self.encode(v, path + [str(k)])]
                                 for k, v in value.items()]}
        where = "/".join(path) or "(root)"
        raise CheckpointError(
            f"cannot store a {type(value).__name__} at {self.prefix}{where} in a checkpoint: checkpoints hold "
            "tensors, arrays, numbers, strings, lists, tuples and dicts only (never pickles). Make that "
            "object's state_dict() return plain values"
        )


def encode_tree(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON-safe data; its tensors are added to ``tensors`` under ``prefix``."""
    return _Encoder(prefix, tensors).encode(value, [])


def decode_tree(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of ``encode_tree``; tensors are looked up in ``tensors`` (cloned, so they own memory)."""
    if isinstance(value, list):
        return [decode_tree(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, inner), = value.items()
        if key == "__tensor__":
            return _lookup(tensors, inner).clone()
        if key == "__ndarray__":
            return _lookup(tensors, inner).numpy().copy()
        if key == "__float__":
            if inner not in ("inf", "-inf", "nan"):
                raise CheckpointError(f"the checkpoint holds a malformed float marker {inner!r}")
            return float(inner)
        if key == "__tuple__":
            return tuple(decode_tree(v, tensors) for v in inner)
        if key == "__dict__":
            return {_hashable(decode_tree(k, tensors)): decode_tree(v, tensors) for k, v in inner}
    return {k: decode_tree(v, tensors) for k, v in value.items()}


def _lookup(tensors: Mapping[str, torch.Tensor], name: Any) -> torch.Tensor:
    if not isinstance(name, str) or name not in tensors:
        raise CheckpointError(f"the checkpoint refers to a tensor {str(name)[:80]!r} that it does not hold")
    return tensors[name]


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict)):
        raise CheckpointError("the checkpoint holds a dictionary key that is not a number, string or tuple")
    return key


# --------------------------------------------------------------------------- random states


def capture_rng(generators: Mapping[str, Any] = {}) -> dict[str, Any]:
    """Every random state: Python, NumPy (legacy global), torch CPU, CUDA (if in use), named generators."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    named: dict[str, Any] = {}
    for name, generator in generators.items():
        if isinstance(generator, torch.Generator):
            named[name] = {"kind": "torch", "device": str(generator.device), "state": generator.get_state()}
        elif isinstance(generator, np.random.Generator):
            named[name] = {"kind": "numpy", "state": generator.bit_generator.state}
        else:
            raise CheckpointError(
                f"generator {name!r} is a {type(generator).__name__}; pass a torch.Generator or a "
                "numpy.random.Generator"
            )
    state["generators"] = named
    return state


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, Any] = {}) -> None:
    """Set every random state captured by ``capture_rng`` (after ``decode_tree``)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        for index in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(saved[index], index)
    saved_named = state.get("generators", {})
    missing = sorted(set(generators) - set(saved_named))
    if missing:
        raise CheckpointError(
            f"the checkpoint holds no state for generator(s) {missing}; it has {sorted(saved_named)}. "
            "Resume with the same generator names the run was started with"
        )
    for name, generator in generators.items():
        entry = saved_named[name]
        if isinstance(generator, torch.Generator):
            generator.set_state(entry["state"])
        else:
            generator.bit_generator.state = entry["state"]


# --------------------------------------------------------------------------- whole state


def capture(state: CheckpointState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, tree)`` of the whole training state; tensors are the live ones (copy them before training goes on)."""
    tensors: dict[str, torch.Tensor] = {}
    weights = state.model.state_dict()
    for name, tensor in weights.items():
        tensors[MODEL_PREFIX + name] = tensor.detach()
    tree: dict[str, Any] = {"model": list(weights)}
    if state.structure:
        tree["structure"] = {name: encode_tree(owner.state_dict(), f"structure/{name}/", tensors)
                             for name, owner in state.structure.items()}
    for section in ("optimizer", "scheduler", "scaler"):
        owner = getattr(state, section)
        if owner is not None:
            tree[section] = encode_tree(owner.state_dict(), f"{section}/", tensors)
    tree["callbacks"] = {
        name: encode_tree(callback.state_dict(), f"callbacks/{name}/", tensors)
        for name, callback in state.callbacks.items()
    }
    tree["rng"] = encode_tree(capture_rng(state.generators), "rng/", tensors)
    return tensors, tree


def restore(state: CheckpointState, tensors: Mapping[str, torch.Tensor], tree: Mapping[str, Any]) -> None:
    """Load everything ``capture`` recorded into the live objects of ``state``.

    The model must have the same parameter names and shapes; a missing section
    for an object the caller passes (say an optimizer the run did not have) is an error.
    Order: model, structure, optimizer, scheduler, scaler, callbacks, random states.
    """
    weights = {name[len(MODEL_PREFIX):]: tensor for name, tensor in tensors.items() if name.startswith(MODEL_PREFIX)}
    try:
        state.model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint's weights do not fit this model: {exc}") from None
    saved_structure = tree.get("structure", {})
    for name, owner in state.structure.items():
        if name in saved_structure:  # absent from checkpoints written before it was recorded: the initial layout
            owner.load_state_dict(decode_tree(saved_structure[name], tensors))
    for section in ("optimizer", "scheduler", "scaler"):
        owner = getattr(state, section)
        if owner is None:
            continue
        if section not in tree:
            raise CheckpointError(f"the checkpoint holds no {section} state, but a {section} was passed to restore")
        owner.load_state_dict(decode_tree(tree[section], tensors))
    saved_callbacks = tree.get("callbacks", {})
    for name, callback in state.callbacks.items():
        if name not in saved_callbacks:
            raise CheckpointError(
                f"the checkpoint holds no state for callback {name!r}; it has {sorted(saved_callbacks)}"
            )
        callback.load_state_dict(decode_tree(saved_callbacks[name], tensors))
    restore_rng(decode_tree(tree["rng"], tensors), state.generators)

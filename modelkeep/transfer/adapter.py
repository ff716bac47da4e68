"""One transfer interface for every model: ``features``, ``head``, ``replace_head(n)``, ``freeze``, ``unfreeze``.

``as_transferable(module)`` returns a ``Transferable`` view of the module (the module itself is what
trains and what ``save`` writes; the view adds nothing to its state dict). A spec-built module —
zoo models and imported models are spec-built — answers natively (``SpecModule.features``,
``reset_head``); any other ``nn.Module`` goes through the adapter: its head is an attribute
(``head="classifier"``, dotted paths allowed; default: the last ``nn.Linear``) and its features are
what the head receives, captured with a forward hook. A spec without a head (a sentence encoder whose
output is an ``L2Normalize``) gets a ``Dense`` head added on its output by ``replace_head``.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from ..errors import ConfigError
from .selectors import Layer, head_index, select_parameters, set_trainable, transfer_layers

__all__ = ["Transferable", "as_transferable", "freeze", "unfreeze"]


def _is_spec_module(module: torch.nn.Module) -> bool:
    # looked up on the class: the instance's head_name raises for a spec without a head
    return callable(getattr(module, "reset_head", None)) and hasattr(type(module), "head_name") \
        and hasattr(module, "spec")


def _last_linear(module: torch.nn.Module) -> str:
    found = [name for name, child in module.named_modules() if isinstance(child, torch.nn.Linear) and name]
    if not found:
        raise ConfigError(f"{type(module).__name__} has no nn.Linear to use as its head; name the head with "
                          "as_transferable(model, head='attribute')")
    return found[-1]


def _parent_and_name(module: torch.nn.Module, path: str) -> tuple[torch.nn.Module, str]:
    parent_path, _, name = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    return parent, name


def _spec_head_path(module: torch.nn.Module) -> str | None:
    """``layers.<head>`` of a spec module, or ``None`` when its spec has no head (an encoder: ``replace_head`` adds one)."""
    from ..errors import SpecError

    try:
        return f"layers.{module.head_name}"
    except SpecError:
        return None


def _with_new_head(module: torch.nn.Module, num_outputs: int) -> torch.nn.Module:
    """A spec module with a ``Dense`` head of ``num_outputs`` added on its (first) output; every old weight kept."""
    from ..nn import build
    from ..spec.model import ModelSpec

    spec = module.spec
    data = spec.to_dict()
    name = next(n for n in ("head", *(f"head_{i}" for i in range(1, 100))) if n not in spec.by_name)
    data["layers"].append({"kind": "Dense", "name": name, "units": num_outputs, "inputs": [spec.outputs[0]]})
    data["head"] = name
    if "outputs" in data:
        data["outputs"] = [name]
    grown = build(ModelSpec.from_dict(data))
    old = next(iter(module.parameters()), None)
    if old is not None:
        grown = grown.to(device=old.device, dtype=old.dtype)
    missing, unexpected = grown.load_state_dict(module.state_dict(), strict=False)
    if unexpected or any(not key.startswith(f"layers.{name}.") for key in missing):
        raise ConfigError(f"adding a head to {spec.name!r} did not keep its weights (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    grown.train(module.training)
    return grown


class Transferable:
    """The transfer interface of ``module``: see ``as_transferable``."""

    def __init__(self, module: torch.nn.Module, head: str | None = None) -> None:
        if isinstance(module, Transferable):
            module = module.module
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"as_transferable takes a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.native = _is_spec_module(module) and head is None
        if self.native:
            self.head_path = _spec_head_path(module)
        else:
            self.head_path = head if head is not None else _last_linear(module)
            try:
                module.get_submodule(self.head_path)
            except AttributeError:
                raise ConfigError(f"{type(module).__name__} has no submodule {self.head_path!r} to use as the head"
                                  ) from None

    # ---------------------------------------------------------------- the interface

    @property
    def head(self) -> torch.nn.Module:
        if self.head_path is None:
            raise ConfigError(f"spec {self.module.spec.name!r} has no head; add one with replace_head(num_outputs)")
        return self.module.get_submodule(self.head_path)

    @property
    def head_parameters(self) -> list[str]:
        if self.head_path is None:
            return []
        prefix = self.head_path + "."
        return [name for name, _ in self.module.named_parameters() if name.startswith(prefix)]

    def layers(self) -> list[Layer]:
        """The layers that hold parameters, input first; the head's layer is ``layers()[head_index]``."""
        return transfer_layers(self.module)

    def layer_label(self, layer: Layer) -> str:
        """How tables and the lineage name a layer: a spec module's layer name (``"conv1"``), else the prefix."""
        return layer.short if self.native and layer.name.startswith("layers.") else layer.name

    @property
    def head_index(self) -> int:
        if self.head_path is None:
            raise ConfigError(f"spec {self.module.spec.name!r} has no head; give it one with head=N (replace_head)")
        return head_index(self.layers(), self.head_parameters)

    def features(self, *inputs: torch.Tensor) -> torch.Tensor:
        """What the head receives for ``inputs`` (for a spec module: ``SpecModule.features``)."""
        if self.native:
            return self.module.features(*inputs)
        captured: list[torch.Tensor] = []
        hook = self.head.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            self.module(*inputs)
        finally:
            hook.remove()
        if not captured:
            raise ConfigError(f"the head {self.head_path!r} did not run in forward(); name the right head")
        return captured[0]

    def replace_head(self, num_outputs: int, *, seed: int | None = None) -> torch.nn.Module:
        """A fresh head of ``num_outputs`` units in place of the old one (``seed``: reproducible weights).

        A spec module without a head (an encoder such as an imported sentence embedder) gets one added on its
        output instead: ``self.module`` is then a new module, with every old weight."""
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs <= 0:
            raise ConfigError(f"replace_head needs a positive number of outputs, got {num_outputs!r}")
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            if self.native and self.head_path is None:  # an encoder: a head is added on its output
                self.module = _with_new_head(self.module, num_outputs)
                self.head_path = f"layers.{self.module.head_name}"
                return self.head
            if self.native:
                return self.module.reset_head(num_outputs)
            return self._replace_linear(num_outputs)

    def _replace_linear(self, num_outputs: int) -> torch.nn.Module:
        old = self.head
        if not isinstance(old, torch.nn.Linear):
            raise ConfigError(f"the head {self.head_path!r} is a {type(old).__name__}; the adapter replaces an "
                              "nn.Linear head (replace other heads yourself, then pass the model)")
        new = torch.nn.Linear(old.in_features, num_outputs, bias=old.bias is not None)
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        parent, name = _parent_and_name(self.module, self.head_path)
        setattr(parent, name, new)
        return new

    def selected(self, selectors: Any) -> list[str]:
        """Parameter names chosen by ``selectors`` (see ``freeze``); ``"all_but_head"`` and ``"all"`` too."""
        names = [name for name, _ in self.module.named_parameters()]
        if selectors == "all":
            return names
        if selectors == "all_but_head":
            head = set(self.head_parameters)
            layers = self.layers()
            after = {n for layer in layers[self.head_index + 1:] for n in layer.parameters}
            return [n for n in names if n not in head and n not in after]
        if not isinstance(selectors, (list, tuple)):
            selectors = [selectors]
        return select_parameters(self.module, selectors, layers=self.layers())

    def freeze(self, *selectors: Any) -> list[str]:
        """Freeze (``requires_grad=False``) what the selectors choose; none: everything. Returns the names."""
        return set_trainable(self.module, self._names(selectors), False)

    def unfreeze(self, *selectors: Any) -> list[str]:
        """Let what the selectors choose train again; none: everything. Returns the names."""
        return set_trainable(self.module, self._names(selectors), True)

    def _names(self, selectors: Iterable[Any]) -> list[str]:
        selectors = list(selectors)
        if not selectors:
            return self.selected("all")
        out: list[str] = []
        for item in selectors:
            out.extend(n for n in self.selected(item) if n not in out)
        return out

    def __repr__(self) -> str:
        return f"Transferable({type(self.module).__name__}, head={self.head_path!r})"


def as_transferable(module: torch.nn.Module, head: str | None = None) -> Transferable:
    """The transfer interface of any module: zoo, spec-built and imported models natively, user classes
    through the adapter (``head``: the head's attribute name, default the last ``nn.Linear``).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> view = as_transferable(net)
    >>> view.head_path, view.features(torch.zeros(2, 4)).shape
    ('2', torch.Size([2, 8]))
    >>> _ = view.replace_head(5, seed=0); net(torch.zeros(2, 4)).shape
    torch.Size([2, 5])
    >>> view.freeze("all_but_head")
    ['0.weight', '0.bias']
    """
    return Transferable(module, head)


def freeze(module: torch.nn.Module, *selectors: Any, head: str | None = None) -> list[str]:
    """``as_transferable(module, head).freeze(*selectors)``: freeze by index, name, glob or ``"all_but_head"``."""
    return Transferable(module, head).freeze(*selectors)


def unfreeze(module: torch.nn.Module, *selectors: Any, head: str | None = None) -> list[str]:
    """``as_transferable(module, head).unfreeze(*selectors)``."""
    return Transferable(module, head).unfreeze(*selectors)

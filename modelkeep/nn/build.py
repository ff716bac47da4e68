"""Building a spec into a plain ``torch.nn.Module``.

``SpecModule`` holds one submodule per layer in a ``ModuleDict`` and runs them
in the spec's order, feeding each layer the outputs it names. Its state-dict
keys are ``layers.<layer name>.<parameter>``, stable across runs and versions.
A layer that ``shares`` another's weights has no entry of its own (it runs the
owner's module), and a ``Dense`` ``tied_to`` an embedding stores only its bias,
so every tensor is stored and counted once.

Every ``SpecModule`` offers the same transfer interface: ``features(x)`` (the
input of the head), ``head`` (the last layer with parameters, or the spec's
``head``), ``forward_head(features)`` and ``reset_head(num_outputs)``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import SpecError
from ..spec.model import Layer, ModelSpec, load_spec
from . import layers as _built_in_builders  # noqa: F401  (registers the builder of every built-in kind)
from .init import apply_initializers
from .layer_builders import build_layer
from .modules import TiedLinear


def _build_layer(spec: ModelSpec, layer: Layer) -> nn.Module:
    module = build_layer(layer.kind, spec.input_shapes_of(layer))
    apply_initializers(module, layer.kind)
    if not layer.trainable:
        module.requires_grad_(False)
    return module


class SpecModule(nn.Module):
    """The module a spec builds. ``module.spec`` is the ``ModelSpec`` it came from."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleDict()
        for layer in spec.layers:
            if layer.shares is None:
                self.layers[layer.name] = _build_layer(spec, layer)
        for layer in spec.layers:
            self._tie(layer)
        # (layer name, key of the module that runs it, names of its inputs)
        self._plan = [(layer.name, layer.shares or layer.name, layer.inputs) for layer in spec.layers]
        self._input_names = [layer.name for layer in spec.inputs]
        self._outputs = list(spec.outputs)

    def _tie(self, layer: Layer) -> None:
        target = getattr(layer.kind.fields, "tied_to", None)
        if target is None:
            return
        module = self.layers[layer.name]
        linear = module[0] if isinstance(module, nn.Sequential) else module
        if isinstance(linear, TiedLinear):
            linear.tie(self.layers[target])

    # ----------------------------------------------------------------- running
    def _run(self, values: dict[str, torch.Tensor], plan: list[tuple[str, str, tuple[str, ...]]]) -> None:
        for name, key, sources in plan:
            if sources:
                values[name] = self.layers[key](*(values[s] for s in sources))
            else:
                values[name] = self.layers[key](values[name])

    def _bind_inputs(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        if len(inputs) != len(self._input_names):
            raise TypeError(
                f"{self.spec.name} takes {len(self._input_names)} input tensor(s) "
                f"({', '.join(self._input_names)}), got {len(inputs)}"
            )
        return dict(zip(self._input_names, inputs))

    def forward(self, *inputs: torch.Tensor) -> Any:
        values = self._bind_inputs(inputs)
        self._run(values, self._plan)
        if len(self._outputs) == 1:
            return values[self._outputs[0]]
        return tuple(values[name] for name in self._outputs)

    # ----------------------------------------------------------------- transfer
    @property
    def head_name(self) -> str:
        """Name of the head layer (see ``ModelSpec.head_layer``)."""
        return self.spec.head_layer().name

    @property
    def head(self) -> nn.Module:
        """The head: the module ``reset_head`` replaces (for a classifier, its last ``Linear``)."""
        return self.layers[self.head_name]

    def _features_source(self) -> str:
        head = self.spec.head_layer()
        if len(head.inputs) != 1:
            raise SpecError(f"head {head.name!r} reads {len(head.inputs)} inputs; features need exactly one")
        return head.inputs[0]

    def features(self, *inputs: torch.Tensor) -> torch.Tensor:
        """What the head receives: the network's representation before the head (e.g. ``(B, 512)`` for ResNet-18)."""
        source = self._features_source()
        needed = self._ancestors(source)
        values = self._bind_inputs(inputs)
        self._run(values, [step for step in self._plan if step[0] in needed])
        return values[source]

    def forward_head(self, features: torch.Tensor) -> Any:
        """The head and every layer after it, from ``features`` (what ``features`` returns)."""
        head = self.head_name
        after = self._descendants(head)
        values = {self._features_source(): features}
        plan = [step for step in self._plan if step[0] in after]
        for name, _, sources in plan:
            missing = [s for s in sources if s not in values]
            if missing:
                raise SpecError(f"layer {name!r} after the head also reads {missing}; run the whole model instead")
            self._run(values, [(name, _, sources)])
        outputs = [values[name] for name in self._outputs if name in values]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def reset_head(self, num_outputs: int) -> nn.Module:
        """Replace the head with a fresh one of ``num_outputs`` units (new weights, same initialisers).

        A head tied to an embedding (GPT's ``lm_head``) becomes untied: it gets a weight of its own.

        The spec is updated too (``module.spec``), so saving the module records the new head.
        Returns the new head module, on the device and dtype of the old one.
        """
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs <= 0:
            raise SpecError(f"reset_head needs a positive number of outputs, got {num_outputs!r}")
        layer = self.spec.head_layer()
        if "units" not in type(layer.kind.fields).model_fields:
            raise SpecError(
                f"head {layer.name!r} is a {layer.kind_name} layer, which has no 'units' to change; "
                f"name a Dense layer as the spec's 'head'"
            )
        changes: dict[str, Any] = {"units": num_outputs}
        if getattr(layer.kind.fields, "tied_to", None):
            changes["tied_to"] = None  # a new head has its own weight: the embedding cannot be reused
        new_spec = self.spec.replace(layer.name, **changes)
        old = next(iter(self.layers[layer.name].parameters()), None)
        module = _build_layer(new_spec, new_spec.by_name[layer.name])
        if old is not None:
            module = module.to(device=old.device, dtype=old.dtype)
        self.layers[layer.name] = module
        self.spec = new_spec
        self._tie(new_spec.by_name[layer.name])
        return module

    def _ancestors(self, name: str) -> set[str]:
        found, stack = set(), [name]
        while stack:
            current = stack.pop()
            if current not in found:
                found.add(current)
                stack.extend(self.spec.by_name[current].inputs)
        return found

    def _descendants(self, name: str) -> set[str]:
        found = {name}
        for layer in self.spec.layers:  # topological order: inputs come first
            if any(source in found for source in layer.inputs):
                found.add(layer.name)
        return found

    def extra_repr(self) -> str:
        return f"spec={self.spec.name!r}"


def build(spec: Any, *, seed: int | None = None) -> SpecModule:
    """Build a spec (a ``ModelSpec``, dict or JSON/YAML path) into a module.

    With ``seed``, weight initialisation is reproducible and does not disturb the
    global random state. Under ``with torch.device("meta"):`` nothing is allocated.
    """
    spec = load_spec(spec)
    if seed is None:
        return SpecModule(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SpecModule(spec)

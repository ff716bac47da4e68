"""Building is nn's job: the builder registry, kinds of your own, and a spec layer that never imports nn or torch.

``modelkeep.spec`` says what a layer is; ``modelkeep.nn.layer_builders`` says how it
becomes a ``torch.nn.Module``. A user kind is built either by a ``build``
method on its class or by a function registered with ``register_builder``.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from modelkeep.errors import SpecError
from modelkeep.nn import LAYER_BUILDERS, build, register_builder
from modelkeep.spec import LAYER_KINDS, LayerKind, ParameterGroup, count_parameters, register_kind
from modelkeep.spec.layers.core import Dense

ROOT = Path(__file__).resolve().parents[2]


class ScaleModule(torch.nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight  # (B, ..., F)


def scale_parameters(self: LayerKind, inputs: list) -> list[ParameterGroup]:
    return [ParameterGroup(inputs[0][-1], f"{inputs[0][-1]} (one factor per feature)")]


@pytest.fixture
def scratch_registries():
    """Kinds and builders registered in a test are gone after it, so the whole-registry tests never see them."""
    saved = [(registry, dict(registry._items), dict(registry._canonical)) for registry in (LAYER_KINDS, LAYER_BUILDERS)]
    yield
    for registry, items, canonical in saved:
        registry._items, registry._canonical = items, canonical


def one_layer(kind: str, features: int = 4, **fields) -> dict:
    return {"layers": [{"kind": "Input", "shape": [features]}, {"kind": kind, "name": "x", **fields}]}


def test_every_built_in_kind_has_a_registered_builder():
    built_in = [name for name in LAYER_KINDS.names() if LAYER_KINDS.get(name).__module__.startswith("modelkeep.")]
    missing = [name for name in built_in if name not in LAYER_BUILDERS]
    assert not missing, f"register a builder in modelkeep/nn/layers/ for {missing}"


def test_a_user_kind_with_a_build_method(scratch_registries):
    @register_kind
    class Scale(LayerKind):
        name = "Scale"
        examples = [{"inputs": [[4]], "fields": {}}]
        parameters = scale_parameters

        def build(self, inputs):
            return ScaleModule(inputs[0][-1])

    spec = one_layer("Scale")
    module = build(spec, seed=0)
    assert isinstance(module.layers["x"], ScaleModule)
    assert count_parameters(spec).total == sum(p.numel() for p in module.parameters()) == 4
    torch.testing.assert_close(module(torch.full((2, 4), 3.0)), torch.full((2, 4), 3.0))


def test_a_user_kind_with_a_registered_builder(scratch_registries):
    @register_kind
    class Scale(LayerKind):  # no torch anywhere in the kind
        name = "Scale"
        aliases = ("Scaling",)
        examples = [{"inputs": [[4]], "fields": {}}]
        parameters = scale_parameters

    @register_builder("Scaling")  # an alias names the same kind
    def build_scale(kind, inputs):
        return ScaleModule(inputs[0][-1])

    module = build(one_layer("scale", features=6), seed=0)
    assert isinstance(module.layers["x"], ScaleModule) and module.layers["x"].weight.shape == (6,)


def test_a_subclass_of_a_built_in_kind_is_built_like_its_base_unless_it_says_otherwise(scratch_registries):
    @register_kind
    class NarrowDense(Dense):
        name = "NarrowDense"
        aliases = ()
        examples = Dense.examples

    @register_kind
    class BiaslessDense(Dense):
        name = "BiaslessDense"
        aliases = ()
        examples = Dense.examples

        def build(self, inputs):
            return torch.nn.Linear(inputs[0][-1], self.fields.units, bias=False)

    narrow = build(one_layer("NarrowDense", units=3, activation="relu"), seed=0).layers["x"]
    assert isinstance(narrow, torch.nn.Sequential) and isinstance(narrow[0], torch.nn.Linear)
    biasless = build(one_layer("BiaslessDense", units=3), seed=0).layers["x"]
    assert isinstance(biasless, torch.nn.Linear) and biasless.bias is None


def test_a_kind_without_a_builder_says_how_to_give_it_one(scratch_registries):
    @register_kind
    class Unbuilt(LayerKind):
        name = "Unbuilt"
        examples = [{"inputs": [[4]], "fields": {}}]

    with pytest.raises(SpecError) as info:
        build(one_layer("Unbuilt"))
    message = str(info.value)
    assert "layer 'x' (Unbuilt): layer kind 'Unbuilt' has no builder" in message
    assert "build(self, inputs) method" in message and "register_builder('Unbuilt')" in message


def test_a_builder_must_return_a_module(scratch_registries):
    @register_kind
    class Wrong(LayerKind):
        name = "Wrong"
        examples = [{"inputs": [[4]], "fields": {}}]

        def build(self, inputs):
            return lambda x: x

    with pytest.raises(SpecError, match="layer 'x' \\(Wrong\\): its builder returned function, not a torch.nn.Module"):
        build(one_layer("Wrong"))


def test_register_builder_checks_the_kind_name(scratch_registries):
    with pytest.raises(SpecError, match="unknown layer kind 'Dence'; did you mean 'Dense'"):
        register_builder("Dence")(lambda kind, inputs: torch.nn.Identity())
    with pytest.raises(ValueError, match="registered twice"):
        register_builder("Dense")(lambda kind, inputs: torch.nn.Identity())
    with pytest.raises(TypeError, match="at least one layer kind name"):
        register_builder()


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_spec_imports_neither_nn_nor_torch():
    loaded = _run("""
        import sys
        import modelkeep.spec
        from modelkeep.spec import ModelSpec, count_parameters
        spec = ModelSpec.from_dict({"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 2}]})
        count_parameters(spec)
        print(",".join(sorted(m for m in sys.modules if m.startswith(("modelkeep.nn", "torch")))))
    """)
    assert loaded == "", f"modelkeep.spec imported {loaded}"


def test_counting_gpt3_from_the_cli_does_not_import_torch():
    out = _run("""
        import contextlib, io, json, sys
        from modelkeep.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()) as buffer:
            assert main(["params", "gpt3_175b", "--json"]) == 0
        total = json.loads(buffer.getvalue())["total"]
        print(total, "torch" in sys.modules)
    """)
    assert out == "174604259328 False"

"""Layer fields: checked in plain Python when values are final, by pydantic otherwise, with the same outcome.

``modelkeep.spec.fields`` accepts a value only when pydantic would return it
unchanged; everything else goes to the pydantic model built from the same
declaration (``modelkeep.spec._pydantic_fields``). The differential test runs
both on every field of every registered kind over a corpus of values and
requires the same values (types included) or the same error.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any, Literal, Optional

import pytest
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField

from modelkeep.errors import SpecError
from modelkeep.spec import LAYER_KINDS, LayerKind, ModelSpec, count_parameters, register_kind
from modelkeep.spec._pydantic_fields import validate
from modelkeep.spec.fields import Field, Fields, _fast_values, field_validator, make_fields, model_validator
from modelkeep.spec.layers.core import Dense, Embedding

VALUES: list[Any] = [
    -8, 0, 1, 3, 10**30, "eight", "8", " 8 ", "8.0", 8.0, 8.5, 0.5, 0.0, -0.5, True, False, None, [], [1], [2, 2],
    [3, -1], ["1", 2], [1.0, 2.0], [True, 1], {}, float("inf"), float("nan"), "same", "relu", "GELU", "float32",
    "true", "channels_last", "he_normal", {"name": "normal", "std": 0.02}, {"name": "constant"}, "",
]


def outcome(action) -> tuple:
    """``("ok", [(name, type, repr)])`` or ``("error", message)``: comparable, NaN included."""
    try:
        values = action()
    except SpecError as exc:
        return ("error", str(exc))
    return ("ok", [(name, type(value).__name__, repr(value)) for name, value in values.items()])


def corpus(kind: type[LayerKind]):
    for example in kind.examples[:2]:
        base = dict(example["fields"])
        yield base
        yield {**base, "bogus": 1}
        for name in kind.Fields.model_fields:
            yield {k: v for k, v in base.items() if k != name}
            for value in VALUES:
                yield {**base, name: value}


@pytest.mark.parametrize("kind_name", LAYER_KINDS.names())
def test_fields_agree_with_pydantic_on_every_value(kind_name):
    kind = LAYER_KINDS.get(kind_name)
    fast_hits = 0
    for data in corpus(kind):
        ours = outcome(lambda: make_fields(kind.Fields, data).model_dump())
        theirs = outcome(lambda: validate(kind.Fields, data))
        assert ours == theirs, data
        fast = _fast_values(kind.Fields, data)
        if fast is not None and ours[0] == "ok":
            fast_hits += 1
            assert outcome(lambda: fast) == theirs, data  # what the fast path keeps is what pydantic returns
    assert fast_hits, "the examples of every kind are final values: the fast path must take them"


def test_every_built_in_example_is_validated_and_counted_without_pydantic():
    code = """if True:
        import sys
        from modelkeep.spec import LAYER_KINDS, count_parameters
        for name in LAYER_KINDS.names():
            kind = LAYER_KINDS.get(name)
            for example in kind.examples:
                dtype = example.get("dtype", "float32")
                dtypes = dtype if isinstance(dtype, list) else [dtype] * len(example["inputs"])
                layers = [{"kind": "Input", "name": f"in{i}", "shape": s, "dtype": dtypes[i]}
                          for i, s in enumerate(example["inputs"])]
                layer = {"kind": name, "name": "x", **example["fields"]}
                if layers:
                    layer["inputs"] = [entry["name"] for entry in layers]
                count_parameters({"layers": [*layers, layer]})
        print(sorted(m for m in sys.modules if m.startswith(("pydantic", "modelkeep.spec._pydantic"))))
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_values_to_coerce_are_coerced_as_pydantic_does():
    fields = Dense.Fields(units="8", use_bias=1, kernel_initializer="he_normal")
    assert (fields.units, fields.use_bias) == (8, True) and type(fields.units) is int
    spec = ModelSpec.from_dict({"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "units": 8.0}]})
    assert spec.to_dict()["layers"][1] == {"kind": "Dense", "name": "dense_1", "units": 8}
    assert count_parameters(spec).total == 40


@pytest.mark.parametrize(("fields", "message"), [
    ({"units": -8}, "layer 1 'x' (Dense): field 'units': Input should be greater than 0 (got -8)"),
    ({"units": 4, "unit": 4}, "layer 1 'x' (Dense): unknown field 'unit'"),
    ({}, "layer 1 'x' (Dense): field 'units': Field required (got {})"),
    ({"units": 4, "activation": "rleu"}, "layer 1 'x' (Dense): field 'activation': unknown activation 'rleu'; "
                                         "did you mean 'relu'"),
    ({"units": 4.5, "use_bias": "maybe"}, "layer 1 'x' (Dense): field 'units': Input should be a valid integer, got a "
                                          "number with a fractional part (got 4.5); field 'use_bias': Input should be "
                                          "a valid boolean, unable to interpret input (got 'maybe')"),
])
def test_errors_name_the_layer_the_field_and_what_was_received(fields, message):
    with pytest.raises(SpecError) as caught:
        ModelSpec.from_dict({"layers": [{"kind": "Input", "shape": [4]}, {"kind": "Dense", "name": "x", **fields}]})
    assert str(caught.value).startswith(message)


def test_a_model_validator_runs_on_both_paths():
    assert Embedding.Fields(num_embeddings=5, embedding_dim=2, padding_idx=4).padding_idx == 4
    for padding_idx in (5, "5"):
        with pytest.raises(SpecError, match=r"^padding_idx must be in \[0, 5\), got 5$"):
            Embedding.Fields(num_embeddings=5, embedding_dim=2, padding_idx=padding_idx)


def test_fields_are_frozen_comparable_and_dump_like_pydantic():
    fields = Dense.Fields(units=4, activation="relu", kernel_initializer={"name": "constant", "value": math.inf})
    with pytest.raises(AttributeError, match="frozen"):
        fields.units = 5
    assert fields == Dense.Fields(units=4, activation="relu", kernel_initializer={"name": "constant", "value": math.inf})
    assert fields != Dense.Fields(units=4) and hash(Dense.Fields(units=4)) == hash(Dense.Fields(units=4))
    # an Any field loses its non-finite floats in JSON (pydantic's rule); defaults are left out
    assert fields.model_dump(mode="json", exclude_defaults=True) == {
        "kernel_initializer": {"name": "constant", "value": None}, "activation": "relu", "units": 4}
    assert list(Dense.Fields.model_fields) == [
        "kernel_initializer", "bias_initializer", "activation", "units", "use_bias", "tied_to"]
    assert "Dense" in repr(Dense.Fields) and "units=4" in repr(fields)


@pytest.fixture
def scratch_kinds():
    saved = dict(LAYER_KINDS._items), dict(LAYER_KINDS._canonical)
    yield
    LAYER_KINDS._items, LAYER_KINDS._canonical = saved


def one_layer(kind: str, **fields) -> dict:
    return {"layers": [{"kind": "Input", "shape": [4]}, {"kind": kind, "name": "x", **fields}]}


def test_a_kind_of_your_own_declares_fields_as_in_pydantic(scratch_kinds):
    @register_kind
    class Gate(LayerKind):
        name = "Gate"
        examples = [{"inputs": [[4]], "fields": {"factor": 0.5}}]

        class Fields(Fields):
            factor: float = Field(gt=0.0)
            mode: Literal["row", "column"] = "row"
            label: Optional[str] = None

            @field_validator("label")
            @classmethod
            def _short(cls, value: Optional[str]) -> Optional[str]:
                if value is not None and len(value) > 3:
                    raise ValueError(f"label {value!r} is longer than 3 characters")
                return value

            @model_validator(mode="after")
            def _row_only_with_label(self) -> "Gate.Fields":
                if self.mode == "column" and self.label is None:
                    raise ValueError("mode 'column' needs a label")
                return self

    assert ModelSpec.from_dict(one_layer("Gate", factor=2.0)).by_name["x"].kind.fields.factor == 2.0
    assert ModelSpec.from_dict(one_layer("Gate", factor=2)).by_name["x"].kind.fields.factor == 2.0  # coerced
    for fields, message in [({"factor": 0.0}, "field 'factor': Input should be greater than 0"),
                            ({"factor": 1.0, "label": "long"}, "field 'label': label 'long' is longer than 3"),
                            ({"factor": 1.0, "mode": "column"}, "(Gate): mode 'column' needs a label")]:
        with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
            ModelSpec.from_dict(one_layer("Gate", **fields))


def test_a_kind_whose_fields_are_a_pydantic_model_still_works(scratch_kinds):
    @register_kind
    class Legacy(LayerKind):
        name = "Legacy"
        examples = [{"inputs": [[4]], "fields": {"units": 2}}]

        class Fields(BaseModel):
            model_config = ConfigDict(extra="forbid", frozen=True)
            units: int = PydanticField(gt=0)

        def output_shape(self, inputs):
            return (self.fields.units,)

    assert ModelSpec.from_dict(one_layer("Legacy", units="3")).output_shape == (3,)
    with pytest.raises(SpecError, match=r"layer 1 'x' \(Legacy\): field 'units': Input should be greater than 0"):
        ModelSpec.from_dict(one_layer("Legacy", units=0))


def test_a_spec_round_trips_through_json_unchanged():
    data = {"name": "n", "layers": [
        {"kind": "Input", "shape": [3, 8, 8]},
        {"kind": "Conv2D", "filters": 4, "kernel_size": [3, 1], "padding": "same", "kernel_initializer": "he_normal"},
        {"kind": "BatchNorm2D", "momentum": 0.05}, {"kind": "GlobalAvgPool"}, {"kind": "Dense", "units": 2}]}
    spec = ModelSpec.from_dict(data)
    again = ModelSpec.from_dict(json.loads(spec.to_json()))
    assert again.to_dict() == spec.to_dict() and again.by_name["conv2d_1"].kind.fields == spec.by_name[
        "conv2d_1"].kind.fields

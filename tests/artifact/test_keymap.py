"""Key matching: explicit prefix mappings, the wrapper prefixes DataParallel, torch.compile and Lightning add,
and ``load_weights(mapping=...)`` using the same rules as ``import_model``."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from modelkeep.artifact.keymap import match_keys, parse_mapping, rename, wrapper_prefixes
from modelkeep.artifact.loading import load_weights
from modelkeep.errors import ConfigError, FormatError

TARGET = {"body.0.weight": (8, 4), "body.0.bias": (8,), "head.weight": (3, 8), "head.bias": (3,)}


def prefixed(prefix: str) -> dict:
    return {prefix + name: shape for name, shape in TARGET.items()}


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "model.", "module._orig_mod.",
                                    "_orig_mod.module.", "model.module."])
def test_wrapper_prefixes_are_removed_when_that_fits_more(prefix):
    match = match_keys(prefixed(prefix), TARGET)
    assert match.complete and match.stripped == prefix
    assert match.pairs == {name: prefix + name for name in TARGET}


def test_a_prefix_is_kept_when_the_target_uses_it():
    target = {"model.w": (2,), "model.b": (2,)}  # the module itself has a child called "model"
    match = match_keys({"model.w": (2,), "model.b": (2,)}, target)
    assert match.complete and match.stripped == ""


def test_explicit_mapping_renames_on_name_boundaries():
    mapping = parse_mapping(["backbone=body", "fc.=head."])
    assert rename("backbone.0.weight", mapping) == "body.0.weight"
    assert rename("backbone2.weight", mapping) == "backbone2.weight"  # not a boundary
    assert rename("fc.bias", mapping) == "head.bias"
    assert rename("x", parse_mapping({"": "pre."})) == "pre.x"  # an empty prefix adds one
    assert rename("a.b.c", {"a": "x", "a.b": "y"}) == "y.c"      # the longest prefix wins
    source = {"backbone.0.weight": (8, 4), "backbone.0.bias": (8,), "fc.weight": (3, 8), "fc.bias": (3,)}
    assert match_keys(source, TARGET, mapping=mapping).complete


def test_mapping_then_wrapper_prefix():
    source = {"module.backbone.0.weight": (8, 4), "module.backbone.0.bias": (8,), "module.fc.weight": (3, 8),
              "module.fc.bias": (3,)}
    match = match_keys(source, TARGET, mapping={"module.backbone": "module.body", "module.fc": "module.head"})
    assert match.complete and match.stripped == "module."


def test_report_of_missing_unexpected_and_mismatched():
    source = {"body.0.weight": (8, 4), "head.weight": (5, 8), "extra.weight": (1,)}
    match = match_keys(source, TARGET)
    assert match.loaded == ["body.0.weight"]
    assert match.missing == ["body.0.bias", "head.bias"]
    assert match.unexpected == ["extra.weight"]
    assert match.mismatched == [("head.weight", (5, 8), (3, 8))]
    assert "shape mismatch head.weight: file [5, 8], model [3, 8]" in match.summary()


@pytest.mark.parametrize("bad, message", [
    (["no-equals-sign"], "OLD=NEW"),
    (["a=b", "a=c"], "twice"),
    ("a=b", "dict"),
])
def test_bad_mappings_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_mapping(bad)


def test_a_mapping_that_merges_two_names_is_refused():
    with pytest.raises(ConfigError, match="two tensors the name"):
        match_keys({"a.w": (1,), "b.w": (1,)}, {"c.w": (1,)}, mapping={"a": "c", "b": "c"})


def test_wrapper_prefix_candidates():
    assert wrapper_prefixes(["module._orig_mod.x", "y"]) == ["", "module.", "module._orig_mod."]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8))
        self.head = torch.nn.Linear(8, 3)


def test_load_weights_takes_a_mapping_and_strips_wrappers(tmp_path):
    source = Net()
    state = {name.replace("body.", "backbone."): value for name, value in source.state_dict().items()}
    save_file({f"module.{k}": v for k, v in state.items()}, tmp_path / "w.safetensors")
    target = Net()
    with pytest.raises(FormatError, match="do not fit"):
        load_weights(target, tmp_path / "w.safetensors", verify=False, strict=True)
    report = load_weights(target, tmp_path / "w.safetensors", verify=False, strict=True,
                          mapping={"module.backbone": "module.body"})
    assert report.complete and report.stripped == "module."
    assert torch.equal(target.head.weight, source.head.weight) and torch.equal(target.body[0].bias, source.body[0].bias)

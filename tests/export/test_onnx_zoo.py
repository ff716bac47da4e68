"""Every zoo model exports to ONNX and computes in onnxruntime what it computes in PyTorch.

The test runs over ``modelkeep.zoo.list_models()``, so a model added to the zoo is checked here without a
line of this file changing. Each model is built at its ``small`` size, narrowed further where its options
allow (``width``, ``hidden``: VGG and AlexNet keep 4096-wide classifiers at their small size), and its
weights and normalisation statistics are perturbed so that its outputs are not all close to zero (a fresh
deep network's often are, which would make any export "pass"). The exporter's own check must pass, and
onnxruntime's outputs on fresh inputs must equal the module's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modelkeep import export_onnx, list_models
from modelkeep.nn import build
from modelkeep.zoo import ZOO

NARROW = {"width": 8, "hidden": 32}  # integer options that only make a model thinner


def tiny(name: str) -> dict:
    entry = ZOO.get(name)
    options, overrides = entry.options(), dict(entry.small)
    for key, value in NARROW.items():
        if isinstance(options.get(key), int) and not isinstance(options.get(key), bool) and key not in overrides:
            overrides[key] = value
    return overrides


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.rand(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise)
            elif name.endswith("running_mean") or name.endswith("bias"):
                tensor.copy_((noise - 0.5) * 0.2)
            elif tensor.ndim == 1:  # norm scales
                tensor.copy_(0.75 + noise * 0.5)
    return module.eval()


def fresh_inputs(module, rows: int, seed: int) -> tuple[np.ndarray, ...]:
    from modelkeep.export._source import resolve_source
    from modelkeep.export.parity import generated_inputs

    return generated_inputs(resolve_source(module), [], rows=rows, seed=seed)


def zoo_cases() -> list:
    """Every zoo model; one whose tiny spec is the very spec of a model before it (GPT-3 175B at its small size
    is GPT-2's) is the same graph and the same check, so it runs with the slow tests only."""
    seen, cases = {}, []
    for name in list_models():
        spec = ZOO.get(name).spec_dict(**tiny(name))
        key = repr({k: v for k, v in spec.items() if k != "name"})
        marks = [pytest.mark.slow] if key in seen else []
        cases.append(pytest.param(name, marks=marks, id=name))
        seen.setdefault(key, name)
    return cases


@pytest.mark.parametrize("name", zoo_cases())
def test_every_zoo_model_exports_and_matches_in_onnxruntime(name, tmp_path):
    module = perturbed(build(ZOO.get(name).spec(**tiny(name)), seed=0))
    result = export_onnx(module, tmp_path / f"{name}.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4, result.summary()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    inputs = fresh_inputs(module, rows=3, seed=7)
    feed = {item.name: array for item, array in zip(session.get_inputs(), inputs)}
    got = session.run(None, feed)[0]
    with torch.no_grad():
        expected = module(*(torch.from_numpy(a) for a in inputs))
    expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
    assert np.abs(expected).max() > 1e-3, "the perturbed model's outputs are all near zero; the check proves nothing"
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())), rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if tiny(n) != ZOO.get(n).small])
def test_zoo_models_at_their_plain_small_size(name, tmp_path):
    """AlexNet and VGG at their ``small`` size keep 4096-wide classifiers (57M-134M parameters): slow."""
    module = perturbed(build(ZOO.get(name).spec(**ZOO.get(name).small), seed=0))
    assert export_onnx(module, tmp_path / f"{name}.onnx").max_abs_diff <= 1e-4

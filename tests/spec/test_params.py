"""Parameter accounting: published totals, formulas, buffers, bytes, and a GPT-3-sized spec counted cheaply."""
from __future__ import annotations

import time
import tracemalloc

import pytest
import torch

from modelkeep.errors import SpecError
from modelkeep.nn import build
from modelkeep.spec import count_parameters
from modelkeep.zoo import get_spec

PUBLISHED = {  # torchvision's figures (1000 classes), GPT-2's with its tied head, LeNet-5 fully connected
    "vgg16": 138_357_544,
    "vgg11": 132_863_336,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "alexnet": 61_100_840,
    "gpt2": 124_439_808,
    "lenet5": 61_706,
}


@pytest.mark.parametrize("name, total", sorted(PUBLISHED.items()))
def test_published_totals(name, total):
    report = count_parameters(get_spec(name))
    assert report.total == total
    assert report.trainable == total and report.non_trainable == 0


def test_batch_norm_statistics_are_buffers_not_parameters():
    report = count_parameters(get_spec("resnet18"))
    assert report.buffers == 9_620  # 20 batch norms: running mean and var per channel, plus a step counter each
    with torch.device("meta"):
        module = build(get_spec("resnet18"))
    assert report.buffers == sum(b.numel() for b in module.buffers())


def test_gpt3_175b_is_counted_fast_without_allocating():
    spec = get_spec("gpt3_175b")
    tracemalloc.start()
    start = time.perf_counter()
    report = count_parameters(spec)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.total == 174_604_259_328
    assert seconds < 1.0
    assert peak < 20_000_000  # bytes: the weights would be 698 GB in float32
    assert report.bytes == report.total * 4
    assert count_parameters(spec, dtype="bfloat16").bytes == report.total * 2
    block = {row.name: row for row in report.layers}["h_0"]
    d = 12288
    assert block.parameters == 12 * d * d + 13 * d


@pytest.mark.slow
def test_gpt3_175b_meta_build_agrees():
    with torch.device("meta"):
        module = build(get_spec("gpt3_175b"))
    assert sum(p.numel() for p in module.parameters()) == 174_604_259_328


def test_formulas():
    spec = {"layers": [
        {"kind": "Input", "shape": [3, 32, 32]},
        {"kind": "Conv2D", "name": "conv", "filters": 16, "kernel_size": 5, "groups": 1},
        {"kind": "Conv2D", "name": "grouped", "filters": 32, "kernel_size": 3, "groups": 4},
        {"kind": "Flatten"},
        {"kind": "Dense", "name": "fc", "units": 10},
    ]}
    rows = {r.name: r for r in count_parameters(spec).layers}
    assert rows["conv"].formula == "5*5*3*16+16" and rows["conv"].parameters == 1216
    assert rows["grouped"].formula == "3*3*16/4*32+32" and rows["grouped"].parameters == 3 * 3 * 4 * 32 + 32
    assert rows["fc"].formula == f"{32 * 26 * 26}*10+10"
    gru = count_parameters({"layers": [{"kind": "Input", "shape": [4, 10]}, {"kind": "GRU", "name": "g", "units": 20}]})
    assert gru.layers[1].formula == "3*(10*20+20*20+2*20)"
    attention = count_parameters({"layers": [{"kind": "Input", "shape": [4, 64]},
                                             {"kind": "MultiHeadAttention", "num_heads": 8}]})
    assert attention.total == 4 * (64 * 64 + 64)
    embedding = count_parameters({"layers": [{"kind": "Input", "shape": [4], "dtype": "int64"},
                                             {"kind": "Embedding", "num_embeddings": 1000, "embedding_dim": 32}]})
    assert embedding.layers[1].formula == "1000*32"


def test_report_json_shape():
    document = count_parameters(get_spec("resnet18")).to_dict()
    assert {"total", "trainable", "non_trainable", "buffers", "bytes", "buffer_bytes", "dtype", "layers"} <= set(document)
    row = document["layers"][1]
    assert row == {"name": "conv1", "kind": "Conv2D", "output_shape": [64, 112, 112], "parameters": 9408,
                   "trainable": 9408, "formula": "7*7*3*64", "buffers": 0, "note": "", "frozen": False,
                   "bytes": 37632}


def test_plain_module_counted_once_per_shared_tensor():
    shared = torch.nn.Linear(4, 4)
    module = torch.nn.Sequential(shared, torch.nn.ReLU(), shared, torch.nn.BatchNorm1d(4))
    report = count_parameters(module)
    assert report.total == 20 + 8
    assert report.buffers == 9


def test_unknown_dtype():
    with pytest.raises(SpecError, match="dtype 'float8' is not one of float64, float32"):
        count_parameters(get_spec("mlp"), dtype="float8")

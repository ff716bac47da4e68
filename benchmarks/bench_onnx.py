"""onnx: inference latency of the zoo's small models, onnxruntime (the file ``export_onnx`` writes) against
eager PyTorch, at batch 1 and batch 64.

Each model is built, exported with ``modelkeep.export_onnx`` (parity-checked as usual) and then timed side by
side: one case is a number of forward passes in eager PyTorch (``torch.no_grad``, eval mode), the other the same
number of ``InferenceSession.run`` calls on the same inputs. Both run on one thread (PyTorch's intra-op threads
and onnxruntime's ``intra_op_num_threads``): on a shared machine, two-thread runs measure the neighbours more
than the runtimes. The table shows seconds for the N calls of a repetition (N chosen so one repetition takes
about 0.25 s); the per-call latencies are listed below it. The ratio column is onnxruntime's time over
PyTorch's (below 1: onnxruntime is faster).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ._harness import Case, Context, Report, Row, interleave

NAME = "onnx"
DESCRIPTION = "inference latency at batch 1 and 64: onnxruntime (exported file) vs eager PyTorch, zoo small models"

# name -> zoo overrides: sizes a user would run on a CPU, small enough for a benchmark
MODELS = {
    "mlp": {},  # 784-256-128-10
    "lenet5": {},  # 1x32x32
    "resnet18": {"num_classes": 10, "input_shape": (3, 32, 32), "width": 16},
    "lstm_classifier": {"vocab_size": 5000, "seq_len": 64, "embedding_dim": 64, "hidden": 64},
}
BATCHES = (1, 64)


def _inputs(module, batch: int) -> np.ndarray:
    from modelkeep.export._source import resolve_source
    from modelkeep.export.parity import generated_inputs

    return generated_inputs(resolve_source(module), [], rows=batch, seed=0)[0]


def _calls_for(seconds: float, once: float) -> int:
    return max(3, min(2000, int(seconds / max(once, 1e-6))))


def run(ctx: Context) -> Report:
    import onnxruntime

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(ctx, onnxruntime)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: Context, onnxruntime) -> Report:
    from modelkeep import export_onnx
    from modelkeep.nn import build
    from modelkeep.zoo import get_spec

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    folder = ctx.subdir(NAME)
    rows: list[Row] = []
    info: dict[str, str] = {"threads": "1 (both)", "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}
    budget = 0.05 if ctx.quick else 0.25  # seconds of calls per timed repetition
    for name, overrides in MODELS.items():
        module = build(get_spec(name, **overrides), seed=0).eval()
        start = time.perf_counter()
        exported = export_onnx(module, folder / f"{name}.onnx")
        info[f"{name} export"] = (f"{time.perf_counter() - start:.1f} s, {exported.size_bytes / 1e6:.1f} MB, "
                                  f"max abs diff {exported.max_abs_diff:.2g}")
        session = onnxruntime.InferenceSession(str(exported.path), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        for batch in BATCHES:
            x = _inputs(module, batch)
            tensor = torch.from_numpy(x)

            def eager(_state, tensor=tensor):
                with torch.no_grad():
                    return module(tensor)

            def ort(_state, x=x):
                return session.run(None, {input_name: x})

            once = min(_time(eager), _time(ort))
            calls = _calls_for(budget, once)
            group = f"{name} batch {batch}"
            torch_case = f"{group}: eager PyTorch ({calls} calls)"  # case names are unique across groups
            ort_case = f"{group}: onnxruntime ({calls} calls)"
            cases = [Case(torch_case, lambda s, f=eager, n=calls: [f(s) for _ in range(n)]),
                     Case(ort_case, lambda s, f=ort, n=calls: [f(s) for _ in range(n)])]
            timings = interleave(cases, ctx.reps)
            for case in cases:
                reference = torch_case if case.name == ort_case else None
                rows.append(Row(group, case.name, timings[case.name], ref=reference))
            eager_ms, ort_ms = (1e3 * float(np.median(timings[c])) / calls for c in (torch_case, ort_case))
            info[f"{group} per call"] = (f"eager PyTorch {eager_ms:.3f} ms, onnxruntime {ort_ms:.3f} ms "
                                         f"(ratio {ort_ms / eager_ms:.2f})")
    report = Report(NAME, "Inference latency: onnxruntime vs eager PyTorch (seconds for N calls; per call below)", rows,
                    info=info)
    report.notes.append("ratio = onnxruntime latency / eager PyTorch latency in the same group")
    return report


def _time(function) -> float:
    function(None)  # warm up
    start = time.perf_counter()
    function(None)
    return time.perf_counter() - start

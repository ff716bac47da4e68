"""serve: requests per second and p50/p99 latency of ``modelkeep serve`` under load on loopback, against a bare
FastAPI endpoint and against onnxruntime called in-process.

The model is the quick-start digits CNN (``modelkeep.quickstart.DIGITS_CNN``: 1x8x8 images, 10 classes), saved
once. Every server is a real uvicorn process started with ``python -m ...`` (never in the process of the
clients): ``modelkeep serve`` with ``--backend onnxruntime`` and ``--backend torch``, each with batching on
(``--max-batch-size 32``, the default queue delay of 0: requests queued behind a running batch form the next)
and off (``--max-batch-size 1``), onnxruntime also with a 2 ms queue delay (``--max-queue-delay-us 2000``: a lone
request waits 2 ms for company, as Triton's ``max_queue_delay_microseconds``), and
the endpoint a user writes by hand: FastAPI, ``modelkeep.load``, the network called per request in eager PyTorch
under ``torch.no_grad``, no batching. Each answers the same V2 JSON request (one image) with the class
probabilities.

The load generator runs in separate processes (``multiprocessing``, spawned), each with a few threads, each
thread holding one keep-alive ``http.client`` connection and sending the next request as soon as the last is
answered (a closed loop): 1 client = 1 process x 1 thread, 8 = 2 x 4, 64 = 4 x 16. (One asyncio process with
64 connections measures itself on a 2-core machine, not the server.) Each window runs for a fixed time after a
short warm-up; a repetition runs every server once per concurrency, the order rotating. Rows give seconds per
1,000 requests (1,000 / throughput) with the bare endpoint as the reference (below 1: more requests per second than the
bare endpoint); ratio 2 is against a no-op route of the bare app that parses the same body (the floor HTTP
and JSON set on this machine); the info lines give requests/s, p50 and p99 in milliseconds. The in-process
reference is ``InferenceSession.run`` on one image (the same exported network, one thread).

On a 2-core machine the clients, the server and its model share two cores: absolute throughput is the
machine's, the ratios between servers are what carries over.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

from ._harness import Context, Report, Row, Verdict

NAME = "serve"
DESCRIPTION = ("HTTP serving under load on loopback (1/8/64 clients): modelkeep serve (onnxruntime/eager, "
               "batching on/off) vs a bare FastAPI endpoint, and in-process onnxruntime")

LEVELS = {1: (1, 1), 8: (2, 4), 64: (4, 16)}  # clients -> (processes, threads per process)
BATCHING_ON = ["--max-batch-size", "32", "--max-queue-delay-us", "0"]
BATCHING_DELAY = ["--max-batch-size", "32", "--max-queue-delay-us", "2000"]
BATCHING_OFF = ["--max-batch-size", "1", "--max-queue-delay-us", "0"]
BARE = "bare FastAPI endpoint (eager, per request)"
ORT_ON = "modelkeep serve, onnxruntime, batching on"
ORT_OFF = "modelkeep serve, onnxruntime, batching off"
ORT_DELAY = "modelkeep serve, onnxruntime, batching on, 2 ms queue delay"
FLOOR = "HTTP floor: a no-op FastAPI endpoint (same body)"
INFER = "/v2/models/digits/infer"

BARE_APP = '''
"""What a user writes by hand: load the model, run it per request."""
import sys

import numpy as np
import torch
from fastapi import Body, FastAPI

import modelkeep

model = modelkeep.load(sys.argv[1])
app = FastAPI()


@app.post("/v2/models/digits/infer")
def infer(body: dict = Body(...)):
    tensor = body["inputs"][0]
    x = torch.tensor(tensor["data"], dtype=torch.float32).reshape(tensor["shape"])
    with torch.no_grad():
        probabilities = torch.softmax(model.module(x), dim=-1)
    return {"model_name": "digits", "outputs": [{"name": "probabilities", "shape": list(probabilities.shape),
                                                 "datatype": "FP32", "data": probabilities.flatten().tolist()}]}


@app.post("/noop")
def noop(body: dict = Body(...)):  # the floor: an HTTP round trip and JSON parsing, no model
    return {"outputs": []}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
'''


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _servers(model_path: Path, folder: Path, quick: bool) -> dict[str, list[str]]:
    """Case name -> the command that starts it (``{port}`` filled in later)."""
    serve = [sys.executable, "-m", "modelkeep", "serve", str(model_path), "--port", "{port}", "--no-access-log",
             "--log-level", "warning"]
    bare = folder / "bare_app.py"
    bare.write_text(textwrap.dedent(BARE_APP))
    servers = {BARE: [sys.executable, str(bare), str(model_path), "{port}"],
               ORT_ON: [*serve, "--backend", "onnxruntime", *BATCHING_ON]}
    if not quick:
        servers.update({
            ORT_OFF: [*serve, "--backend", "onnxruntime", *BATCHING_OFF],
            ORT_DELAY: [*serve, "--backend", "onnxruntime", *BATCHING_DELAY],
            "modelkeep serve, eager PyTorch, batching on": [*serve, "--backend", "torch", *BATCHING_ON],
            "modelkeep serve, eager PyTorch, batching off": [*serve, "--backend", "torch", *BATCHING_OFF]})
    return servers


def _start(command: list[str]) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return process, port


def _wait_ready(process: subprocess.Popen, port: int, body: bytes, timeout: float = 180) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a server exited: {process.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("POST", "/v2/models/digits/infer", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read()
            connection.close()
            if response.status == 200:
                return
            raise RuntimeError(f"the server answered {response.status}: {text[:300]!r}")
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("a server did not start in time")


def _client_process(port: int, path: str, body: bytes, threads: int, warmup: float, seconds: float,
                    queue: Any) -> None:
    """One load-generating process: ``threads`` closed-loop clients; puts (latencies, errors) on ``queue``."""
    import http.client
    import threading

    start_at = time.monotonic() + 0.2  # every thread connects first, then all start together
    results: list[tuple[list[float], int]] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies, errors = [], 0
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < start_at:
            time.sleep(0.001)
        measure_from, stop = start_at + warmup, start_at + warmup + seconds
        while True:
            began = time.perf_counter()
            now = time.monotonic()
            if now >= stop:
                break
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if now >= measure_from and time.monotonic() <= stop:
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1
        connection.close()
        results.append((latencies, errors))

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(([x for latencies, _ in results for x in latencies], sum(errors for _, errors in results)))


def _load(port: int, path: str, body: bytes, clients: int, warmup: float, seconds: float) -> dict[str, float]:
    """One window of closed-loop load from ``clients`` clients: requests/s, p50 and p99 (ms), errors."""
    processes, threads = LEVELS[clients]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_client_process, args=(port, path, body, threads, warmup, seconds, queue))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    gathered, deadline = [], time.monotonic() + 60 + warmup + seconds
    while len(gathered) < len(workers):
        try:
            gathered.append(queue.get(timeout=0.5))
        except Empty:
            failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                for worker in workers:
                    worker.kill()
                raise RuntimeError(f"a load-generating process failed (exit codes {failed}) or hung") from None
    for worker in workers:
        worker.join()
    latencies = np.array([x for part, _ in gathered for x in part])
    errors = sum(e for _, e in gathered)
    if not len(latencies):
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": errors}
    return {"rps": len(latencies) / seconds, "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            "p99_ms": 1e3 * float(np.percentile(latencies, 99)), "errors": errors}


def _in_process(model_path: Path, image: np.ndarray, quick: bool) -> dict[str, float]:
    """p50 of one in-process call: onnxruntime on the exported network, and eager PyTorch (ms)."""
    import torch

    from modelkeep import load
    from modelkeep.serve.onnx_runner import OnnxNetwork, export_network

    model = load(model_path)
    network = OnnxNetwork(export_network(model)[0], threads=1)
    session, name = network.session, network.input_name
    tensor = torch.from_numpy(image)
    calls = 300 if quick else 3000

    def timed(function) -> float:
        for _ in range(20):
            function()
        samples = []
        for _ in range(calls):
            began = time.perf_counter()
            function()
            samples.append(time.perf_counter() - began)
        return 1e3 * float(np.median(samples))

    def eager() -> Any:
        with torch.no_grad():
            return model.module(tensor)

    return {"onnxruntime": timed(lambda: session.run(None, {name: image})), "eager": timed(eager)}


def run(ctx: Context) -> Report:
    from modelkeep.artifact import save
    from modelkeep.nn import build
    from modelkeep.quickstart import DIGITS_CNN
    from modelkeep.spec import load_spec

    folder = ctx.subdir(NAME)
    model_path = save(build(load_spec(DIGITS_CNN), seed=0), folder / "digits.safetensors", durable=False,
                      task="classification", labels=[str(i) for i in range(10)])
    image = (np.random.default_rng(0).random((1, 1, 8, 8)) * 16).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                   "data": image.ravel().tolist()}]}).encode()
    levels = (1, 64) if ctx.quick else tuple(LEVELS)
    warmup, seconds = (0.2, 0.5) if ctx.quick else (0.5, 3.0)
    reps = 1 if ctx.quick else max(1, min(ctx.reps, 3))
    servers = _servers(model_path, folder, ctx.quick)
    started = {name: _start(command) for name, command in servers.items()}
    try:
        for name, (process, port) in started.items():
            _wait_ready(process, port, body)
        reference = _in_process(model_path, image, ctx.quick)
        targets = {name: (port, INFER) for name, (_, port) in started.items()}
        targets[FLOOR] = (started[BARE][1], "/noop")
        figures = _measure(targets, body, levels, reps, warmup, seconds)
    finally:
        for process, _ in started.values():
            process.terminate()
        for process, _ in started.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    return _report(figures, reference, levels, reps, warmup, seconds, ctx.quick)


def _measure(targets: dict[str, tuple[int, str]], body: bytes, levels: tuple[int, ...], reps: int, warmup: float,
             seconds: float) -> dict[tuple[int, str], list[dict[str, float]]]:
    names = list(targets)
    figures: dict[tuple[int, str], list[dict[str, float]]] = {(c, n): [] for c in levels for n in names}
    for rep in range(reps):
        for clients in levels:
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                port, path = targets[name]
                figures[(clients, name)].append(_load(port, path, body, clients, warmup, seconds))
    return figures


def _report(figures: dict, reference: dict[str, float], levels: tuple[int, ...], reps: int, warmup: float,
            seconds: float, quick: bool) -> Report:
    rows, info = [], {}
    info["in-process, one image, p50"] = (f"onnxruntime {reference['onnxruntime']:.3f} ms, eager PyTorch "
                                          f"{reference['eager']:.3f} ms (one thread each)")
    info["windows"] = f"{warmup} s warm-up + {seconds} s measured per server and concurrency, {reps} rep(s)"
    for clients in levels:
        group = f"{clients} client{'s' if clients > 1 else ''}"
        for (level, name), windows in figures.items():
            if level != clients:
                continue
            samples = [1000.0 / w["rps"] if w["rps"] else float("inf") for w in windows]
            case = f"{name} @{clients}"
            rows.append(Row(group, case, samples, ref=f"{BARE} @{clients}" if name != BARE else None,
                            alt=f"{FLOOR} @{clients}" if name != FLOOR else None))
            p50 = float(np.median([w["p50_ms"] for w in windows]))
            p99 = float(np.median([w["p99_ms"] for w in windows]))
            rps = float(np.median([w["rps"] for w in windows]))
            errors = sum(w["errors"] for w in windows)
            info[case] = f"{rps:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms" + (f", {errors} errors" if errors
                                                                                      else "")
    report = Report(NAME, "HTTP serving under load (seconds per 1,000 requests = 1,000 / throughput; ratio vs "
                          "the bare endpoint)", rows, info=info)
    top = max(levels)
    mk = np.median([w["rps"] for w in figures[(top, ORT_ON)]])
    bare = np.median([w["rps"] for w in figures[(top, BARE)]])
    ceiling = np.median([w["rps"] for w in figures[(top, FLOOR)]])
    report.verdicts.append(Verdict(f"throughput at {top} clients: bare endpoint / modelkeep (onnxruntime, "
                                   "batching) — at most 1/3, i.e. at least 3x the bare endpoint",
                                   float(bare / mk) if mk else None, 1 / 3,
                                   f"modelkeep {mk:,.0f} req/s, bare {bare:,.0f} req/s; the no-op route of the "
                                   f"bare app answers {ceiling:,.0f} req/s"))
    for name in (ORT_ON, ORT_OFF, ORT_DELAY):
        if (1, name) not in figures:
            continue
        p50_one = float(np.median([w["p50_ms"] for w in figures[(1, name)]]))
        floor = float(np.median([w["p50_ms"] for w in figures[(1, FLOOR)]]))
        report.verdicts.append(Verdict(f"p50 at 1 client: {name} / in-process onnxruntime",
                                       p50_one / reference["onnxruntime"], 2.0,
                                       f"{p50_one:.3f} ms over HTTP vs {reference['onnxruntime']:.3f} ms in-process; "
                                       f"the HTTP floor (no-op endpoint) is {floor:.3f} ms"))
    report.notes.append("servers and load generator share this machine's cores (os.cpu_count() = "
                        f"{os.cpu_count()}); batching on = --max-batch-size 32 (queue delay 0, the default), "
                        "batching off = --max-batch-size 1")
    if quick:
        report.notes.append("--quick: two servers (modelkeep onnxruntime with batching, bare), 1 and 64 clients, "
                            "one short window each: a smoke run, not figures to quote")
    return report

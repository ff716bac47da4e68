"""Prometheus metrics of the server, in a registry of its own (several apps can live in one process).

Requests by endpoint (the route's template, never the raw path), model and status; request latency;
rows per batch and the time a batch takes. With several workers (``--workers N``) the values live in
``PROMETHEUS_MULTIPROC_DIR``, which ``modelkeep serve`` sets, and ``/metrics`` adds up every worker's.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The server's counters and histograms; ``render()`` is the body of ``/metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("modelkeep_requests", "HTTP requests answered", ["endpoint", "model", "status"],
                                registry=self.registry)
        self.latency = Histogram("modelkeep_request_duration_seconds", "Time to answer a request",
                                 ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("modelkeep_batch_size", "Rows run together in one batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("modelkeep_batch_duration_seconds", "Time one batch takes in the model",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe_request(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, model, str(status)).inc()
        self.latency.labels(endpoint, model).observe(seconds)

    def observe_batch(self, model: str, rows: int, seconds: float) -> None:
        self.batch_rows.labels(model).observe(rows)
        self.batch_seconds.labels(model).observe(seconds)

    def render(self) -> bytes:
        if os.environ.get(MULTIPROCESS_VARIABLE):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


__all__ = ["MULTIPROCESS_VARIABLE", "Metrics"]

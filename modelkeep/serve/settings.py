"""``ServeSettings``: every option of ``modelkeep serve`` in one frozen dataclass.

The command line, the app factory and the workers uvicorn starts all read this one object; several workers
receive it as JSON in an environment variable (``to_environment``/``from_environment``), since uvicorn
starts each worker from an import string. This module imports neither torch nor the web framework.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

from ..errors import ConfigError

ENVIRONMENT_VARIABLE = "MODELKEEP_SERVE_SETTINGS"
MiB = 1024 * 1024
BACKENDS = ("auto", "onnxruntime", "torch")  # the same as onnx_runner.BACKENDS, without importing it


@dataclass(frozen=True)
class ServeSettings:
    """What to serve and how.

    ``sources``: model files or registry URLs (``registry://name@production``), each served under its
    file's stem or its registry name. ``max_batch_size`` rows run together at most. ``max_queue_delay_us`` is
    Triton's ``max_queue_delay_microseconds``: how long the oldest queued request waits for others to batch
    with; 0 (the default) never waits, which keeps one client's latency lowest while requests that queue
    behind a running batch still run together. ``preferred_batch_sizes`` (Triton's ``preferred_batch_size``):
    waiting stops once the largest is queued, and a batch is cut to the largest one filled. A request body
    over ``max_body_bytes`` is refused (413) while it is read; a request of more than ``max_request_rows``
    rows is refused (400). ``api_keys`` empty: inference is open. ``follow_alias_seconds``: how often a
    registry alias is re-resolved (``None``: never). ``cors_origins`` empty: no CORS headers at all.
    ``device``: where the models run (``"cuda"``); the CPU by default. ``backend``: ``"auto"`` runs each model
    in onnxruntime when its ONNX export passes the parity check and in eager PyTorch otherwise (the reason is
    logged); ``"onnxruntime"`` refuses to start when a model cannot; ``"torch"`` never exports.
    ``onnx_threads``: onnxruntime's intra-op threads per model (``None``: one per physical core, or the
    cores shared out among several workers). ``require_signature``: a public key file; every served file (and
    every version a followed alias moves to) must carry ``FILE.sig`` signed by its pair, checked before it is
    loaded. ``management``: the model-repository endpoints (``/v2/repository/...``), which need one of
    ``management_keys`` on every call; enabling them without a key is refused.
    """

    sources: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch_size: int = 32
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_body_bytes: int = 16 * MiB
    max_request_rows: int = 1024
    api_keys: tuple[str, ...] = ()
    allow_nonfinite: bool = False
    follow_alias_seconds: float | None = None
    cors_origins: tuple[str, ...] = ()
    trust_code: bool = False
    device: str | None = None  # where the weights live ("cuda", "cuda:1"); None: the CPU
    backend: str = "auto"
    onnx_threads: int | None = None
    require_signature: str | None = None
    management: bool = False
    management_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("serve needs at least one model file or registry URL")
        for name in ("workers", "max_batch_size", "max_body_bytes", "max_request_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
        delay = self.max_queue_delay_us
        if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= 60_000_000:
            raise ConfigError(f"max_queue_delay_us must be a whole number of microseconds from 0 to 60000000 "
                              f"(a minute), got {delay!r}")
        for size in self.preferred_batch_sizes:
            if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= self.max_batch_size:
                raise ConfigError(f"a preferred batch size must be a whole number from 1 to max_batch_size "
                                  f"({self.max_batch_size}), got {size!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.onnx_threads is not None and (not isinstance(self.onnx_threads, int)
                                              or isinstance(self.onnx_threads, bool) or self.onnx_threads < 1):
            raise ConfigError(f"onnx_threads must be a whole number of at least 1, got {self.onnx_threads!r}")
        if self.follow_alias_seconds is not None and not self.follow_alias_seconds > 0:
            raise ConfigError(f"follow_alias_seconds must be positive, got {self.follow_alias_seconds!r}")
        if any(not key or any(c.isspace() for c in key) for key in (*self.api_keys, *self.management_keys)):
            raise ConfigError("an API key must be a non-empty word without spaces")
        if self.management and not self.management_keys:
            raise ConfigError("the management endpoints need a key: give --management-key KEY or "
                              "--management-keys-file FILE (or set MODELKEEP_MANAGEMENT_KEYS), or leave them off")

    def to_environment(self) -> str:
        """The settings as JSON, for ``ENVIRONMENT_VARIABLE`` of the worker processes."""
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> "ServeSettings":
        text = os.environ.get(ENVIRONMENT_VARIABLE)
        if not text:
            raise ConfigError(f"{ENVIRONMENT_VARIABLE} is not set: start the server with `modelkeep serve`")
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        for name in ("sources", "api_keys", "cors_origins", "preferred_batch_sizes", "management_keys"):
            data[name] = tuple(data.get(name) or ())
        return cls(**{key: value for key, value in data.items() if key in known})


__all__ = ["ENVIRONMENT_VARIABLE", "ServeSettings"]

"""``modelkeep serve FILE_OR_REF...``: serve models over HTTP (KServe V2 and V1 predict) with uvicorn.

The options become one ``ServeSettings``; ``modelkeep.serve.server.run_server`` does the rest. API keys
can also come from ``MODELKEEP_API_KEYS`` (comma-separated), which keeps them out of the process list.
"""
from __future__ import annotations

import argparse
import os

from ._options import add_trust_code

API_KEYS_VARIABLE = "MODELKEEP_API_KEYS"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="serve models over HTTP: the Open Inference Protocol (KServe V2)")
    parser.add_argument("sources", nargs="+", metavar="FILE_OR_REF",
                        help="model files or registry URLs (registry://name@production); each is served under "
                             "its file's stem or registry name")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy (default 1)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="rows run together at most (default 32)")
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0,
                        help="how long a request waits for others to batch with (default 5 ms)")
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024,
                        help="largest request body accepted, 413 beyond (default 16 MiB)")
    parser.add_argument("--max-request-rows", type=int, default=1024, help="most rows in one request (default 1024)")
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help=f"require this key for inference (repeatable; or set {API_KEYS_VARIABLE})")
    parser.add_argument("--follow-alias", type=float, metavar="SECONDS",
                        help="re-resolve registry aliases this often and serve the version they point at")
    parser.add_argument("--allow-nonfinite", action="store_true", help="accept NaN and infinite inputs")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser requests from this origin (repeatable; default: CORS off)")
    parser.add_argument("--device", help="where the models run: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch"],
                        help="auto (default): onnxruntime when the model's ONNX export passes parity, eager "
                             "PyTorch otherwise; onnxruntime: refuse to start when it does not; torch: never export")
    parser.add_argument("--onnx-threads", type=int, metavar="N",
                        help="onnxruntime's intra-op threads per model (default: one per core, shared among workers)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--no-access-log", action="store_true", help="do not log one JSON line per request")
    add_trust_code(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..serve.server import run_server
    from ..serve.settings import ServeSettings

    keys = [*args.api_key, *(k.strip() for k in os.environ.get(API_KEYS_VARIABLE, "").split(",") if k.strip())]
    settings = ServeSettings(
        sources=tuple(args.sources), host=args.host, port=args.port, workers=args.workers,
        max_batch_size=args.max_batch_size, max_queue_delay_ms=args.max_queue_delay_ms,
        max_body_bytes=args.max_body_bytes, max_request_rows=args.max_request_rows, api_keys=tuple(keys),
        allow_nonfinite=args.allow_nonfinite, follow_alias_seconds=args.follow_alias,
        cors_origins=tuple(args.cors_origin), trust_code=args.trust_code, device=args.device,
        backend=args.backend, onnx_threads=args.onnx_threads)
    _show_server_messages(args.log_level)
    run_server(settings, log_level=args.log_level, access_log=not args.no_access_log)
    return 0


def _show_server_messages(level: str) -> None:
    """The server's own messages on stderr, as uvicorn writes its own: which backend each model runs on and,
    when onnxruntime could not be used, why."""
    import logging

    logger = logging.getLogger("modelkeep.serve")
    if not any(getattr(h, "_modelkeep_server", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        handler._modelkeep_server = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level.upper())

"""``modelkeep serve FILE_OR_REF...``: serve models over HTTP (KServe V2 and V1 predict) with uvicorn.

The options become one ``ServeSettings``; ``modelkeep.serve.server.run_server`` does the rest. API keys
can also come from ``MODELKEEP_API_KEYS`` (comma-separated), and management keys from
``MODELKEEP_MANAGEMENT_KEYS`` or a file (``--management-keys-file``, one key a line), which keeps them out of
the process list.
"""
from __future__ import annotations

import argparse
import os

from ._options import add_require_signature, add_trust_code

API_KEYS_VARIABLE = "MODELKEEP_API_KEYS"
MANAGEMENT_KEYS_VARIABLE = "MODELKEEP_MANAGEMENT_KEYS"
MAX_KEYS_FILE_BYTES = 64 << 10


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="serve models over HTTP: the Open Inference Protocol (KServe V2)")
    parser.add_argument("sources", nargs="+", metavar="FILE_OR_REF",
                        help="model files or registry URLs (registry://name@production); each is served under "
                             "its file's stem or registry name")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy (default 1)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="rows run together at most (default 32)")
    parser.add_argument("--max-queue-delay-us", type=int, default=0, metavar="US",
                        help="as Triton's max_queue_delay_microseconds: how long the oldest queued request waits "
                             "for others to batch with (default 0: no wait; requests queued behind a running "
                             "batch still batch)")
    parser.add_argument("--preferred-batch-size", type=int, action="append", default=[], metavar="N",
                        help="as Triton's preferred_batch_size (repeatable): stop waiting once the largest is "
                             "queued; cut batches to the largest one filled")
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
    parser.add_argument("--management", action="store_true",
                        help="enable the model-repository endpoints (/v2/repository/index, .../load, .../unload) "
                             "for the names served; they always need a management key")
    parser.add_argument("--management-key", action="append", default=[], metavar="KEY",
                        help=f"a key for the management endpoints (repeatable; or set {MANAGEMENT_KEYS_VARIABLE})")
    parser.add_argument("--management-keys-file", metavar="FILE", help="management keys, one a line")
    add_require_signature(parser)
    add_trust_code(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..serve.server import run_server
    from ..serve.settings import ServeSettings

    keys = [*args.api_key, *_words(os.environ.get(API_KEYS_VARIABLE, ""))]
    management_keys = [*args.management_key, *_words(os.environ.get(MANAGEMENT_KEYS_VARIABLE, ""))]
    if args.management_keys_file:
        management_keys += _keys_file(args.management_keys_file)
    settings = ServeSettings(
        sources=tuple(args.sources), host=args.host, port=args.port, workers=args.workers,
        max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=tuple(args.preferred_batch_size), require_signature=args.require_signature,
        management=args.management, management_keys=tuple(management_keys),
        max_body_bytes=args.max_body_bytes, max_request_rows=args.max_request_rows, api_keys=tuple(keys),
        allow_nonfinite=args.allow_nonfinite, follow_alias_seconds=args.follow_alias,
        cors_origins=tuple(args.cors_origin), trust_code=args.trust_code, device=args.device,
        backend=args.backend, onnx_threads=args.onnx_threads)
    _show_server_messages(args.log_level)
    run_server(settings, log_level=args.log_level, access_log=not args.no_access_log)
    return 0


def _words(text: str) -> list[str]:
    return [word.strip() for word in text.split(",") if word.strip()]


def _keys_file(path: str) -> list[str]:
    """The keys in ``path``: one a line; blank lines and ``#`` comments skipped; at most 64 KiB read."""
    from ..errors import ConfigError
    from ..io.capped import read_capped

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"the management keys file {path!r} is {why}; give a text file of one key a line")

    try:
        text = read_capped(path, MAX_KEYS_FILE_BYTES, refuse).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the management keys file {path!r}: {exc}; give a text file of one key "
                          "a line") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


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

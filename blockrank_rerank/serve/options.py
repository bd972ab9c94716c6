"""The `blockrank serve` options and the ServeSettings they give (no web framework imported here)."""

from __future__ import annotations

import argparse
import os

from .settings import API_KEY_ENV, ServeSettings

DEFAULTS = ServeSettings()
SERVE_MODULES = frozenset({"fastapi", "uvicorn", "starlette", "pydantic", "pydantic_core", "prometheus_client"})


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Listening, auth, limits and batching options of `blockrank serve`."""
    group = parser.add_argument_group("server")
    group.add_argument("--host", default=DEFAULTS.host, help=f"address to bind (default {DEFAULTS.host})")
    group.add_argument("--port", type=int, default=DEFAULTS.port, help=f"port (default {DEFAULTS.port}; 0: any free)")
    group.add_argument(
        "--api-key",
        default=None,
        help=f"bearer token every route but /health requires (default: ${API_KEY_ENV}; unset: no auth)",
    )
    group.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allow this browser origin by CORS (repeatable; default: CORS off)",
    )
    group.add_argument(
        "--graceful-timeout",
        type=float,
        default=DEFAULTS.graceful_timeout_s,
        help=f"seconds in-flight requests may take after SIGTERM/Ctrl-C (default {DEFAULTS.graceful_timeout_s:g})",
    )
    limits = parser.add_argument_group("request limits")
    limits.add_argument(
        "--max-request-documents",
        type=int,
        default=DEFAULTS.max_documents,
        help=f"most documents (texts) in one request, else 422 (default {DEFAULTS.max_documents})",
    )
    limits.add_argument(
        "--max-tokens-per-doc",
        type=int,
        default=None,
        help="most tokens of one document; longer ones are cut (Cohere, TEI truncate=true) or refused with 422 "
        "(default: what one block of the model holds)",
    )
    limits.add_argument(
        "--max-query-tokens",
        type=int,
        default=None,
        help="most tokens of a query, else cut (TEI truncate=true) or 422 (default: what the query blocks hold)",
    )
    limits.add_argument(
        "--auto-truncate",
        action="store_true",
        help="TEI: cut over-long inputs even when a request says truncate=false (as TEI's --auto-truncate)",
    )
    limits.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULTS.max_body_bytes,
        help=f"larger request bodies get 413 (default {DEFAULTS.max_body_bytes})",
    )
    limits.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULTS.request_timeout_s,
        help=f"seconds before a request gets 504 (default {DEFAULTS.request_timeout_s:g})",
    )
    batching = parser.add_argument_group("batching")
    batching.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULTS.max_queue,
        help=f"requests that may wait for the model; more get 503 + Retry-After (default {DEFAULTS.max_queue})",
    )
    batching.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULTS.max_batch_size,
        help=f"most requests run in one batch (default {DEFAULTS.max_batch_size}; 1: no batching)",
    )
    batching.add_argument(
        "--batch-wait-ms",
        type=float,
        default=DEFAULTS.batch_wait_ms,
        help=f"how long a batch waits for more requests after its first (default {DEFAULTS.batch_wait_ms:g})",
    )


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The ServeSettings of parsed `serve` options; the API key falls back to $BLOCKRANK_API_KEY."""
    api_key = args.api_key if args.api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    try:
        return _settings(args, api_key)
    except ValueError as error:  # "max_queue must be ..." -> "--max-queue must be ..."
        name = str(error).split(" ", 1)[0]
        raise ValueError(str(error).replace(name, FLAGS.get(name, name), 1)) from None


FLAGS = {
    "max_documents": "--max-request-documents",
    "request_timeout_s": "--request-timeout",
    "graceful_timeout_s": "--graceful-timeout",
    "api_key": "--api-key",
}
FLAGS.update({name: "--" + name.replace("_", "-") for name in ("port", "max_tokens_per_doc", "max_query_tokens")})
FLAGS.update({name: "--" + name.replace("_", "-") for name in ("max_body_bytes", "max_queue", "max_batch_size")})
FLAGS["batch_wait_ms"] = "--batch-wait-ms"


def _settings(args: argparse.Namespace, api_key: str | None) -> ServeSettings:
    return ServeSettings(
        host=args.host,
        port=args.port,
        api_key=api_key,
        max_documents=args.max_request_documents,
        max_tokens_per_doc=args.max_tokens_per_doc,
        max_query_tokens=args.max_query_tokens,
        auto_truncate=args.auto_truncate,
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        request_timeout_s=args.request_timeout,
        batch_wait_ms=args.batch_wait_ms,
        max_batch_size=args.max_batch_size,
        cors_origins=tuple(args.cors_origin),
        graceful_timeout_s=args.graceful_timeout,
    )

"""`run_server`: load the model once, bind, and serve the app with uvicorn until SIGTERM or Ctrl-C.

On a signal uvicorn stops accepting connections, lets in-flight requests finish (at most `graceful_timeout_s`),
then the app's lifespan drains the batcher; the signal is then re-raised, so the process ends as signalled.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any, Optional

import uvicorn

from ..reranker import BlockRank
from .app import create_app
from .settings import ServeSettings

logger = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (IPv4 or IPv6, as the host resolves; port 0: any free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(2048)
    return sock


def run_server(
    settings: ServeSettings,
    model: Optional[str] = None,
    overrides: Optional[dict[str, Any]] = None,
    verbose: bool = False,
) -> int:
    """Serve `model` (None: the embedded default) with `settings` until stopped; returns 0."""
    ranker = BlockRank.from_pretrained(model, **(overrides or {}))
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    app = create_app(ranker, settings)
    config = uvicorn.Config(
        app,
        log_config=None,  # the command line configured logging already
        log_level="info" if verbose else "warning",
        access_log=verbose,
        timeout_graceful_shutdown=max(1, round(settings.graceful_timeout_s)),
        lifespan="on",
    )
    shown = f"[{host}]" if ":" in host else host
    auth = "bearer auth on" if settings.api_key else "no auth"
    print(f"blockrank serve: {ranker} on http://{shown}:{port} ({auth})", file=sys.stderr, flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0

"""A real uvicorn server on a free loopback port in a background thread, for the server tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator, Optional

import uvicorn

from blockrank_rerank.serve import ServeSettings, create_app


class RunningServer:
    """A started server: its base URL, app and uvicorn object."""

    def __init__(self, url: str, app: Any, server: uvicorn.Server) -> None:
        self.url, self.app, self.server = url, app, server

    @property
    def service(self) -> Any:
        return self.app.state.service


@contextlib.contextmanager
def running_server(
    ranker: Any, settings: Optional[ServeSettings] = None, **app_options: Any
) -> Iterator[RunningServer]:
    """Serve `create_app(ranker, settings)` on 127.0.0.1 (any free port) until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = create_app(ranker, settings or ServeSettings(), **app_options)
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app, server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

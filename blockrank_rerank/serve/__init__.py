"""`blockrank serve`: a rerank HTTP server that Cohere (v1, v2) and text-embeddings-inference clients speak to.

Needs the `serve` extra (`pip install "blockrank-rerank[serve]"`: FastAPI, uvicorn, pydantic, prometheus-client).
Importing this package imports none of them: `create_app` (app.py) and `run_server` (server.py) load them when
used, so the command line can build its options and name the missing extra in one line.
"""

from __future__ import annotations

from typing import Any

from .settings import API_KEY_ENV, ServeSettings

__all__ = ["API_KEY_ENV", "ServeSettings", "create_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "run_server":
        from .server import run_server

        return run_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

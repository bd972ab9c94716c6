"""The server's settings: one frozen object, checked once, shared by the app, the batcher and `run_server`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

API_KEY_ENV = "BLOCKRANK_API_KEY"  # read when --api-key is not given


@dataclass(frozen=True)
class ServeSettings:
    """How the server listens, what it accepts and how it batches; every limit is per request."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0: a free port, chosen at bind time
    api_key: Optional[str] = None  # bearer token every route but /health then needs (None: no auth)
    max_documents: int = 1000  # most documents (Cohere) or texts (TEI) in one request
    max_tokens_per_doc: Optional[int] = None  # None: what one document block of the model holds
    max_query_tokens: Optional[int] = None  # None: what the query's blocks hold beside the prompt template
    auto_truncate: bool = False  # TEI: truncate over-long inputs even when the request says truncate=false
    max_body_bytes: int = 8 * 1024 * 1024  # larger request bodies get 413 before they are read whole
    max_queue: int = 64  # requests waiting for the model; one more gets 503 with Retry-After
    request_timeout_s: float = 60.0  # a request not answered by then gets 504 (its forward, if running, finishes)
    batch_wait_ms: float = 5.0  # how long a batch gathers concurrent requests after its first (batch size > 1)
    # most requests run in one batch call; 1 (no batching) until a packed multi-query forward exists: the
    # sequential batch call makes every request of a batch wait for all of them (docs/serving.md, measured)
    max_batch_size: int = 1
    retry_after_s: int = 1  # the Retry-After header of a 503
    cors_origins: tuple[str, ...] = ()  # origins allowed by CORS (empty: CORS off, no headers sent)
    graceful_timeout_s: float = 30.0  # on SIGTERM/SIGINT, how long in-flight requests may still take

    def __post_init__(self) -> None:
        positive = ("max_documents", "max_queue", "max_batch_size", "max_body_bytes", "retry_after_s")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("max_tokens_per_doc", "max_query_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an int in [0, 65535], got {self.port!r}")
        for name in ("request_timeout_s", "batch_wait_ms", "graceful_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty (leave it unset for no auth)")

    def replace(self, **changes: Any) -> "ServeSettings":
        """A copy with `changes`, checked again."""
        return dataclasses.replace(self, **changes)

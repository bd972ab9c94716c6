"""Prometheus metrics of one server: requests, latency, documents, tokens, queue depth, batches, errors by status.

Each app gets its own registry, so several apps in one process (tests) never share or clash on counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The server's counters, gauges and histograms, in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "blockrank_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=registry
        )
        self.latency = Histogram(
            "blockrank_request_latency_seconds",
            "Time from a request's arrival to its response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.documents = Counter("blockrank_documents", "Documents reranked", registry=registry)
        self.tokens = Counter("blockrank_input_tokens", "Query and document tokens reranked", registry=registry)
        self.errors = Counter(
            "blockrank_errors", "Error responses (4xx and 5xx), by status", ["status"], registry=registry
        )
        self.queue_depth = Gauge("blockrank_queue_depth", "Requests waiting for the model", registry=registry)
        self.batch_size = Histogram(
            "blockrank_batch_size", "Requests run in one batch call", buckets=BATCH_BUCKETS, registry=registry
        )
        self.forward_seconds = Histogram(
            "blockrank_batch_seconds",
            "Time of one batch call in the worker thread",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe_response(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request (and an error when status >= 400)."""
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)
        if status >= 400:
            self.errors.labels(status=str(status)).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

"""Batch reranking of many queries (`blockrank batch-rerank`): sharded, resumable, in-process or on Ray Data.

    queries (JSONL or a shared candidate run) -> shards -> engine (local, or Ray actors) -> shard files -> merged
    results.jsonl and run.trec

Nothing here is imported by the reranking core, and Ray (extra `[ray]`) only by `ray_engine`, on demand.
"""

from __future__ import annotations

from .inputs import BatchQuery, dataset_queries, read_jsonl_queries
from .job import DEFAULT_SHARD_SIZE, ENGINES, BatchSummary, run_batch
from .local import LocalEngine
from .shards import OutputDirectory

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "ENGINES",
    "BatchQuery",
    "BatchSummary",
    "LocalEngine",
    "OutputDirectory",
    "dataset_queries",
    "read_jsonl_queries",
    "run_batch",
]

"""One shard's work and its output formats: reranked queries as JSONL records and as TREC run lines.

`rerank_shard` is the one place both engines score with, so the local and Ray paths cannot drift apart; its one
`rerank_batch` call packs the shard's prompts that fit `max_pack_tokens` into shared forwards.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..base import Reranker
from ..results import RankedList
from .inputs import BatchQuery

RUN_TAG = "blockrank"


@dataclass(frozen=True)
class ShardResult:
    """A finished shard: its records in input order, which worker made them and how long scoring took."""

    shard: int
    records: tuple[dict[str, Any], ...]
    worker: str
    seconds: float

    @property
    def documents(self) -> int:
        """Candidates scored in this shard (before any top-k cut)."""
        return sum(record["num_candidates"] for record in self.records)


def worker_name() -> str:
    """This process as `host:pid`, the name the summary reports a worker under."""
    return f"{socket.gethostname()}:{os.getpid()}"


def rerank_shard(
    ranker: Reranker, shard: int, queries: Sequence[BatchQuery], top_k: Optional[int], worker: str
) -> ShardResult:
    """Rerank every query of a shard (one `rerank_batch` call) and time it."""
    start = time.perf_counter()
    ranked = ranker.rerank_batch(
        [q.query for q in queries], [list(q.documents) for q in queries], top_k=top_k, show_progress_bar=False
    )
    seconds = time.perf_counter() - start
    records = tuple(query_record(q, result) for q, result in zip(queries, ranked))
    return ShardResult(shard, records, worker, seconds)


def query_record(query: BatchQuery, result: RankedList) -> dict[str, Any]:
    """The output record of one query: qid, candidate count and its ranking (rank, id, index, score)."""
    ranking = []
    for doc in result:
        item: dict[str, Any] = {"rank": doc.rank, "id": doc.id, "index": doc.index, "score": doc.score}
        if doc.relevance_score is not None:
            item["relevance_score"] = doc.relevance_score
        ranking.append(item)
    return {"qid": query.qid, "num_candidates": len(query.documents), "ranking": ranking}


def record_line(record: dict[str, Any]) -> str:
    """A record as one line of JSON (floats written exactly: `json` round-trips them)."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


def trec_lines(record: dict[str, Any], tag: str = RUN_TAG) -> list[str]:
    """A record as TREC run lines `qid Q0 docid rank score tag`; a candidate without an id is named by its index."""
    lines = []
    for item in record["ranking"]:
        docid = item["id"] if item["id"] is not None else item["index"]
        score = item["score"]
        if not math.isfinite(score):
            raise ValueError(f"query {record['qid']}: score {score!r} of {docid} cannot go in a TREC run")
        lines.append(f"{record['qid']} Q0 {docid} {item['rank']} {score!r} {tag}\n")
    return lines

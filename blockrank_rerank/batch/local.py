"""The in-process engine: one model in this process, shards reranked one after another."""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

from ..base import Reranker
from .records import ShardResult, rerank_shard, worker_name
from .shards import Shard


class LocalEngine:
    """Reranks shards in this process with one model (loaded on first use, or the `ranker` given)."""

    name = "local"
    workers = 1

    def __init__(
        self,
        model: Optional[str] = None,
        overrides: Optional[dict[str, Any]] = None,
        top_k: Optional[int] = None,
        ranker: Optional[Reranker] = None,
    ) -> None:
        self.model, self.overrides, self.top_k, self.ranker = model, dict(overrides or {}), top_k, ranker

    def load(self) -> Reranker:
        """The ranker, loaded once."""
        if self.ranker is None:
            from ..reranker import BlockRank

            self.ranker = BlockRank.from_pretrained(self.model, **self.overrides)
        return self.ranker

    def run(self, shards: Sequence[Shard]) -> Iterator[ShardResult]:
        """Each shard's result, in shard order, as soon as it is done."""
        ranker, worker = self.load(), f"local {worker_name()}"
        for shard in shards:
            yield rerank_shard(ranker, shard.index, shard.queries, self.top_k, worker)

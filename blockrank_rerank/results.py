"""Result objects: a ranked document and a ranked list, both frozen; ties break by input index."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Sequence, overload


@dataclass(frozen=True)
class RankedDocument:
    """One candidate after reranking, carrying the caller's id and metadata (lone surrogates in their strings
    replaced by U+FFFD)."""

    index: int  # position in the caller's input list
    # share of the signal attention, in [0, 1], summing to 1 over one call (fused reciprocal ranks when the
    # config's input_order_weight > 0)
    score: float
    rank: int  # 1-based rank, 1 is best
    text: str  # the content that was scored (title + text)
    id: Optional[Any] = None  # the caller's id, when the input was a mapping with "id"
    metadata: Mapping[str, Any] = field(default_factory=dict)  # the caller's other fields
    # calibrated per-document relevance in [0, 1] that barely depends on the other candidates, so it can be
    # thresholded (None for methods without one); `score` stays the share
    relevance_score: Optional[float] = None

    @property
    def thresholded_score(self) -> float:
        """What `score_threshold` compares and what adapters and the server report as relevance: the relevance
        score, or the score for a method without one (ICR, the baselines)."""
        return float(self.score if self.relevance_score is None else self.relevance_score)


@dataclass(frozen=True)
class RankedList:
    """Documents of one query, best first."""

    query: str
    documents: tuple[RankedDocument, ...]

    def __iter__(self) -> Iterator[RankedDocument]:
        return iter(self.documents)

    def __len__(self) -> int:
        return len(self.documents)

    @overload
    def __getitem__(self, item: int) -> RankedDocument: ...
    @overload
    def __getitem__(self, item: slice) -> tuple[RankedDocument, ...]: ...
    def __getitem__(self, item):
        return self.documents[item]

    def top_k(self, k: int) -> "RankedList":
        """The best `k` documents (all of them when `k` exceeds the list)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        return RankedList(self.query, self.documents[:k])

    def scores_by_index(self) -> dict[int, float]:
        """Score of each input index present in the list."""
        return {d.index: d.score for d in self.documents}

    def to_dicts(self) -> list[dict[str, Any]]:
        """Plain dicts (index, rank, score, relevance_score, id, text, metadata), best first, for JSON output."""
        return [
            {
                "index": d.index,
                "rank": d.rank,
                "score": d.score,
                "relevance_score": d.relevance_score,
                "id": d.id,
                "text": d.text,
                "metadata": dict(d.metadata),
            }
            for d in self.documents
        ]


def rank_documents(
    query: str,
    scores: Sequence[float],
    texts: Sequence[str],
    ids: Sequence[Any],
    metadata: Sequence[Mapping[str, Any]],
    top_k: Optional[int],
    relevance: Optional[Sequence[float]] = None,
    score_threshold: Optional[float] = None,
) -> RankedList:
    """Sort by score, best first, ties broken by input index; keep the documents whose relevance score (the score
    when there is none) reaches `score_threshold`; cut to `top_k`."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if score_threshold is not None:  # on what `RankedDocument.thresholded_score` reports
        kept = scores if relevance is None else relevance
        order = [i for i in order if kept[i] >= score_threshold]
    if top_k is not None:
        order = order[:top_k]
    ranked = tuple(
        RankedDocument(
            index=i,
            score=float(scores[i]),
            rank=r + 1,
            text=texts[i],
            id=ids[i],
            metadata=metadata[i],
            relevance_score=None if relevance is None else float(relevance[i]),
        )
        for r, i in enumerate(order)
    )
    return RankedList(query, ranked)

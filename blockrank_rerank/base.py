"""The one reranker base: input validation, ranking and batches written once; a method implements `score_contents`.

`BlockRank`, every evaluation baseline and anything the harness scores with derive from `Reranker`, so a new
method is one subclass and its inputs are checked exactly as BlockRank's are (docs/limits.md).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Optional, Sequence

from tqdm.auto import tqdm

from .inputs import (
    Candidates,
    DocumentInput,
    check_documents,
    check_queries,
    check_query,
    check_score_threshold,
    check_top_k,
)
from .results import RankedList, rank_documents

logger = logging.getLogger(__name__)


class Reranker(ABC):
    """Scores candidate documents for a query, higher is better; `rerank` orders them best-first."""

    max_documents: Optional[int] = None  # most documents one call takes (None: no limit)

    @abstractmethod
    def score_contents(self, query: str, contents: list[str]) -> list[float]:
        """Scores of `contents` (validated, stripped strings) in input order, for a validated `query`."""

    def score_with_relevance(self, query: str, contents: list[str]) -> tuple[list[float], Optional[list[float]]]:
        """Scores of `contents` and their calibrated relevance scores in [0, 1], or None for a method without them
        (the default); a method that reads both in one pass overrides this."""
        return self.score_contents(query, contents), None

    def score_batch_with_relevance(
        self, requests: Sequence[tuple[str, list[str]]]
    ) -> list[tuple[list[float], Optional[list[float]]]]:
        """`score_with_relevance` of each (query, contents) request (contents may be empty); a method that scores
        several queries in one pass (BlockRank's multi-query packing) overrides this."""
        return [self.score_with_relevance(query, contents) if contents else ([], None) for query, contents in requests]

    def score(self, query: str, documents: Sequence[DocumentInput]) -> list[float]:
        """Scores in input order ([] for no documents); documents are str or mappings with "text"
        (and "title", "id", ...)."""
        query = check_query(query)
        contents = self.candidates(documents).contents
        return self.score_contents(query, contents) if contents else []

    def candidates(self, documents: Sequence[DocumentInput]) -> Candidates:
        """`documents` validated and cleaned; ValueError when there are more than `max_documents`."""
        return check_documents(documents, self.max_documents)

    def rerank(
        self,
        query: str,
        documents: Sequence[DocumentInput],
        top_k: Optional[int] = None,
        score_threshold: Optional[float] = None,
    ) -> RankedList:
        """Documents best-first with scores, cut to `top_k`; ties break by input order.

        `score_threshold` keeps only documents whose `relevance_score` (the score, for a method without one) is at
        least that value; it is applied before `top_k`.
        """
        top_k = check_top_k(top_k)
        score_threshold = check_score_threshold(score_threshold)
        return self.rank_candidates(check_query(query), self.candidates(documents), top_k, score_threshold)

    def rank_candidates(
        self, query: str, candidates: Candidates, top_k: Optional[int], score_threshold: Optional[float] = None
    ) -> RankedList:
        """`rerank` for an already validated query, candidates, top_k and score_threshold."""
        (scored,) = self.score_batch_with_relevance([(query, candidates.contents)])
        return ranked_candidates(query, candidates, scored, top_k, score_threshold)

    def rerank_batch(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[DocumentInput]],
        top_k: Optional[int] = None,
        show_progress_bar: Optional[bool] = None,
        score_threshold: Optional[float] = None,
        batch_size: int = 8,
    ) -> list[RankedList]:
        """`rerank` for each (query, documents) pair; a progress bar shows at INFO level or when asked.

        Pairs are scored `batch_size` at a time by `score_batch_with_relevance`; BlockRank packs the prompts of a
        batch that fit `max_pack_tokens` into one forward, with the scores of one query at a time. Every input is
        validated before the first query runs, so a bad item fails the call before any work is done (and none is
        thrown away); a str `queries` is a TypeError, not one query per character.
        """
        top_k = check_top_k(top_k)
        score_threshold = check_score_threshold(score_threshold)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        checked_queries = check_queries(queries)
        if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of document lists, got {type(documents).__name__}")
        if len(checked_queries) != len(documents):
            raise ValueError(f"got {len(checked_queries)} queries but {len(documents)} document lists")
        candidates = [self._batch_candidates(docs, number) for number, docs in enumerate(documents)]
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        ranked: list[RankedList] = []
        with tqdm(total=len(candidates), desc="Reranking", unit="query", disable=not show_progress_bar) as progress:
            for start in range(0, len(candidates), batch_size):
                batch = list(zip(checked_queries[start : start + batch_size], candidates[start : start + batch_size]))
                scored = self.score_batch_with_relevance([(query, docs.contents) for query, docs in batch])
                ranked.extend(
                    ranked_candidates(query, docs, one, top_k, score_threshold)
                    for (query, docs), one in zip(batch, scored)
                )
                progress.update(len(batch))
        return ranked

    def _batch_candidates(self, documents: Sequence[DocumentInput], number: int) -> Candidates:
        """`candidates` for the `number`-th list of a batch, its errors naming the list."""
        try:
            return self.candidates(documents)
        except (TypeError, ValueError) as error:
            raise type(error)(f"documents[{number}]: {error}") from None


def ranked_candidates(
    query: str,
    candidates: Candidates,
    scored: tuple[list[float], Optional[list[float]]],
    top_k: Optional[int],
    score_threshold: Optional[float],
) -> RankedList:
    """`candidates` best-first from their (scores, relevance scores), cut by `score_threshold` and `top_k`."""
    scores, relevance = scored
    return rank_documents(
        query, scores, candidates.contents, candidates.ids, candidates.metadata, top_k, relevance, score_threshold
    )


__all__ = ["Reranker"]

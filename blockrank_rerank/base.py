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
        contents = candidates.contents
        scores, relevance = self.score_with_relevance(query, contents) if contents else ([], None)
        return rank_documents(
            query, scores, contents, candidates.ids, candidates.metadata, top_k, relevance, score_threshold
        )

    def rerank_batch(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[DocumentInput]],
        top_k: Optional[int] = None,
        show_progress_bar: Optional[bool] = None,
        score_threshold: Optional[float] = None,
    ) -> list[RankedList]:
        """`rerank` for each (query, documents) pair; a progress bar shows at INFO level or when asked.

        Every input is validated before the first query runs, so a bad item fails the call before any work
        is done (and none is thrown away); a str `queries` is a TypeError, not one query per character.
        """
        top_k = check_top_k(top_k)
        score_threshold = check_score_threshold(score_threshold)
        checked_queries = check_queries(queries)
        if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of document lists, got {type(documents).__name__}")
        if len(checked_queries) != len(documents):
            raise ValueError(f"got {len(checked_queries)} queries but {len(documents)} document lists")
        candidates = [self._batch_candidates(docs, number) for number, docs in enumerate(documents)]
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        pairs = tqdm(
            list(zip(checked_queries, candidates)), desc="Reranking", unit="query", disable=not show_progress_bar
        )
        return [self.rank_candidates(query, docs, top_k, score_threshold) for query, docs in pairs]

    def _batch_candidates(self, documents: Sequence[DocumentInput], number: int) -> Candidates:
        """`candidates` for the `number`-th list of a batch, its errors naming the list."""
        try:
            return self.candidates(documents)
        except (TypeError, ValueError) as error:
            raise type(error)(f"documents[{number}]: {error}") from None


__all__ = ["Reranker"]

"""BM25 first stage (bm25s) over a BEIR corpus: the shipped test runs' settings, for splits that ship no run.

The SciFact test run in the shared data was built with bm25s (Lucene variant, k1=0.9, b=0.4, English
stopwords and stemming, title + text); `bm25_rankings` builds the same for any split, so dev queries are
reranked over candidates of the same kind as the reporting ones (a data test checks it reproduces the
shipped run). Training uses it for negatives.
"""

from __future__ import annotations

import logging
from typing import Mapping


def bm25_rankings(
    corpus: Mapping[str, str], queries: Mapping[str, str], depth: int
) -> dict[str, list[tuple[str, float]]]:
    """The `depth` best (docid, score) pairs of `corpus` per query, best first."""
    try:
        import bm25s
    except ImportError as error:
        raise ImportError("BM25 candidates need bm25s: pip install 'blockrank-rerank[train]'") from error
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG
    stemmer = english_stemmer()
    docids = list(corpus)
    retriever = bm25s.BM25(k1=0.9, b=0.4)
    tokens = bm25s.tokenize([corpus[d] for d in docids], stopwords="en", stemmer=stemmer, show_progress=False)
    retriever.index(tokens, show_progress=False)
    qids = list(queries)
    query_tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    hits, scores = retriever.retrieve(query_tokens, k=min(depth, len(docids)), show_progress=False)  # (Q, k) each
    return {
        qid: [(docids[int(i)], float(s)) for i, s in zip(row, row_scores)]
        for qid, row, row_scores in zip(qids, hits, scores)
    }


def english_stemmer():
    """PyStemmer's English stemmer (the `train` extra installs it)."""
    try:
        import Stemmer
    except ImportError as error:
        raise ImportError("BM25 candidates need PyStemmer: pip install 'blockrank-rerank[train]'") from error
    return Stemmer.Stemmer("english").stemWords

"""IR metrics through ir-measures: nDCG@10 on graded labels, MRR@10 and recall with a relevance threshold."""

from __future__ import annotations

from typing import Mapping

import ir_measures
from ir_measures import R, RR, nDCG


def measures(binary_threshold: int = 1) -> list:
    """nDCG@10 (graded), MRR@10 and Recall@100 counting grade >= `binary_threshold` as relevant."""
    return [nDCG @ 10, RR(rel=binary_threshold) @ 10, R(rel=binary_threshold) @ 100]


def evaluate(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], binary_threshold: int = 1) -> dict[str, float]:
    """Mean of each measure over the queries in `run` (qid -> docid -> score, higher is better)."""
    judged = {q: dict(qrels.get(q, {})) for q in run}
    scored = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items()}
    values = ir_measures.calc_aggregate(measures(binary_threshold), judged, scored)
    return {str(m): float(v) for m, v in values.items()}


def ranks_to_scores(docids: list[str]) -> dict[str, float]:
    """Scores that reproduce a given order (first is best), so ties never reorder it."""
    return {d: float(len(docids) - i) for i, d in enumerate(docids)}

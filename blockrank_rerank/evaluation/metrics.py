"""IR metrics through ir-measures, and the conversion of rankings to runs: one place for both."""

from __future__ import annotations

from typing import Mapping, Sequence

try:
    import ir_measures
    from ir_measures import R, RR, nDCG
except ImportError as error:  # the evaluation harness is an extra
    raise ImportError("the evaluation harness needs ir-measures: pip install 'blockrank-rerank[eval]'") from error


def measures(depth: int = 100, binary_threshold: int = 1) -> list:
    """nDCG@10 on graded labels; MRR@10, Recall@10 and Recall@depth with grade >= `binary_threshold`."""
    chosen = [nDCG @ 10, RR(rel=binary_threshold) @ 10, R(rel=binary_threshold) @ 10]
    if depth != 10:
        chosen.append(R(rel=binary_threshold) @ depth)
    return chosen


def compute_metrics(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    depth: int = 100,
    binary_threshold: int = 1,
) -> dict[str, float]:
    """Mean of each measure over the queries of `run` (qid -> docid -> score; queries without judgments count 0).

    Keys follow the order of `measures` (ir-measures returns them unordered), so written summaries are stable.
    """
    judged = {q: dict(qrels.get(q, {})) for q in run}
    scored = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items()}
    chosen = measures(depth, binary_threshold)
    values = ir_measures.calc_aggregate(chosen, judged, scored)
    return {str(m): float(values[m]) for m in chosen}


def order_to_scores(docids: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    """Rank-derived scores for `docids` sorted by `scores` (best first, ties kept in the given order)."""
    order = sorted(range(len(docids)), key=lambda i: (-scores[i], i))
    return {docids[i]: float(len(docids) - r) for r, i in enumerate(order)}


def ranks_to_scores(docids: Sequence[str]) -> dict[str, float]:
    """Scores that reproduce a given order (first is best), so ties never reorder it."""
    return order_to_scores(docids, [-i for i in range(len(docids))])

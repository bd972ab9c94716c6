"""Helpers of the batch-rerank tests: a tiny model saved to disk (loadable by path in other processes), synthetic
queries, and comparisons of job outputs with each other and with `BlockRank.rerank`."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence


from blockrank_rerank.batch import BatchQuery
from conftest import save_tiny_model  # noqa: F401  (re-exported for the batch tests)

WORDS = (
    "tide moon ocean gravity pull water coast storm river delta cat feline whisker purr stock market fell rose bond "
    "yield protein enzyme cell membrane volcano lava ash eruption planet orbit comet solar wind turbine energy grid"
).split()
TOLERANCE = 1e-5  # packed forwards (multi-query packing) against one query at a time, and 1- vs 2-thread BLAS


def synthetic_queries(count: int, documents: int = 6, seed: int = 0) -> list[BatchQuery]:
    """`count` queries of random words with `documents` candidates each; query 1 also has a plain-string candidate
    (no id) and a duplicate, query 2 has none."""
    rng = random.Random(seed)
    text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    queries = []
    for number in range(count):
        candidates: list[Any] = [{"id": f"d{number}-{j}", "text": text(rng.randint(4, 30))} for j in range(documents)]
        if number == 1:
            candidates += ["a plain string candidate about the tide", dict(candidates[0], id="dup")]
        if number == 2:
            candidates = []
        queries.append(BatchQuery(f"q{number}", text(rng.randint(2, 6)), tuple(candidates)))
    return queries


def write_jsonl(queries: Sequence[BatchQuery], path: Path) -> Path:
    """`queries` as the JSONL input of batch-rerank."""
    with open(path, "w", encoding="utf-8") as out:
        for q in queries:
            out.write(json.dumps({"qid": q.qid, "query": q.query, "candidates": list(q.documents)}) + "\n")
    return path


def read_results(output: Path) -> list[dict[str, Any]]:
    """The merged results.jsonl of a job."""
    with open(output / "results.jsonl", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def assert_same_results(found: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same queries in the same order, each with the same documents in the same order, scores within 1e-6."""
    assert [r["qid"] for r in found] == [r["qid"] for r in expected]
    for mine, theirs in zip(found, expected):
        assert [(d["id"], d["index"], d["rank"]) for d in mine["ranking"]] == [
            (d["id"], d["index"], d["rank"]) for d in theirs["ranking"]
        ], mine["qid"]
        gaps = [abs(a["score"] - b["score"]) for a, b in zip(mine["ranking"], theirs["ranking"])]
        assert max(gaps, default=0.0) <= TOLERANCE, (mine["qid"], max(gaps))


def assert_matches_rerank(found: list[dict[str, Any]], queries: Sequence[BatchQuery], ranker: Any) -> None:
    """Each record equals `ranker.rerank(query, documents)` of its query: same order, scores within 1e-6."""
    assert [r["qid"] for r in found] == [q.qid for q in queries]
    for record, query in zip(found, queries):
        expected = ranker.rerank(query.query, list(query.documents))
        assert [d["index"] for d in record["ranking"]] == [d.index for d in expected], query.qid
        assert [d["id"] for d in record["ranking"]] == [d.id for d in expected], query.qid
        gaps = [abs(d["score"] - e.score) for d, e in zip(record["ranking"], expected)]
        assert max(gaps, default=0.0) <= TOLERANCE, (query.qid, max(gaps))


def trec_qids_and_docs(output: Path) -> list[tuple[str, str]]:
    """(qid, docid) of every line of the job's run.trec, in file order."""
    with open(output / "run.trec", encoding="utf-8") as lines:
        return [(parts[0], parts[2]) for parts in (line.split() for line in lines)]

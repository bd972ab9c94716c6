"""What a batch job reranks: queries with their candidates, from JSONL or from a shared candidate run.

Every query is validated when it is read (query text, documents, ids fit for a TREC run file, unique qids),
so a bad line fails the job before any model loads, naming the line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ..inputs import check_documents, check_query

WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class BatchQuery:
    """One query of a job: its id, its text and its candidates as the caller gave them (str or {id, text, ...})."""

    qid: str
    query: str
    documents: tuple[Any, ...]

    def to_json(self) -> list[Any]:
        """A compact JSON-ready form ([qid, query, documents]) that `from_json` reads back."""
        return [self.qid, self.query, list(self.documents)]

    @classmethod
    def from_json(cls, item: Sequence[Any]) -> "BatchQuery":
        """The query `to_json` wrote."""
        qid, query, documents = item
        return cls(qid, query, tuple(documents))


def checked_query(qid: Any, query: Any, candidates: Any, where: str) -> BatchQuery:
    """A BatchQuery validated as `rerank` would validate it, plus ids usable in a TREC run; errors name `where`."""
    if isinstance(qid, bool) or not isinstance(qid, (str, int)):
        raise ValueError(f"{where}: 'qid' must be a string or an integer, got {type(qid).__name__}")
    qid = str(qid)
    if not qid or WHITESPACE.search(qid):
        raise ValueError(f"{where}: 'qid' must be non-empty without whitespace (TREC run format), got {qid!r}")
    if not isinstance(candidates, list):
        raise ValueError(f"{where}: 'candidates' must be a list, got {type(candidates).__name__}")
    try:
        check_query(query)
        parsed = check_documents(candidates)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None
    for position, docid in enumerate(parsed.ids):
        if docid is not None and (isinstance(docid, bool) or not isinstance(docid, (str, int))):
            raise ValueError(f"{where}: candidate {position}: 'id' must be a string or an integer")
        if docid is not None and (not str(docid) or WHITESPACE.search(str(docid))):
            raise ValueError(
                f"{where}: candidate {position}: 'id' must be non-empty without whitespace (TREC run format), "
                f"got {docid!r}"
            )
    return BatchQuery(qid, query, tuple(candidates))


def read_jsonl_queries(path: Path) -> list[BatchQuery]:
    """Queries from JSONL, one `{"qid", "query", "candidates": [{"id", "text"}, ...]}` a line (blank lines skipped).

    A candidate may also be a plain string (its TREC docid is then its position). ValueError naming the line
    for malformed JSON, missing keys, bad documents or a qid seen before.
    """
    queries: list[BatchQuery] = []
    with open(path, encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                item = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{where} is not valid JSON: {getattr(error, 'msg', error)}") from None
            if not isinstance(item, dict) or not {"qid", "query", "candidates"} <= item.keys():
                raise ValueError(f"{where}: expected an object with 'qid', 'query' and 'candidates'")
            queries.append(checked_query(item["qid"], item["query"], item["candidates"], where))
    return unique_qids(queries, str(path))


def dataset_queries(name: str, depth: int, num_queries: Optional[int] = None) -> list[BatchQuery]:
    """A shared candidate run (`blockrank eval`'s datasets: dl19, dl21, scifact, ...) cut to `depth` candidates;
    `num_queries`: the first ones by sorted qid."""
    from ..evaluation.evaluate import load_dataset, select_queries

    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    run = load_dataset(name)
    qids = select_queries(run, num_queries, first=True)
    return [
        checked_query(
            qid,
            run.queries[qid],
            [{"id": c.docid, "text": c.text} for c in run.candidates[qid][:depth]],
            f"{name} query {qid}",
        )
        for qid in qids
    ]


def unique_qids(queries: list[BatchQuery], source: str) -> list[BatchQuery]:
    """`queries` unchanged; ValueError when a qid repeats (results are keyed by qid, a repeat would be lost)."""
    seen: set[str] = set()
    for query in queries:
        if query.qid in seen:
            raise ValueError(f"{source}: qid {query.qid!r} appears more than once")
        seen.add(query.qid)
    return queries


def fingerprint(queries: Iterable[BatchQuery]) -> str:
    """SHA-256 of the queries' content, so a rerun can tell whether its output directory holds this job."""
    digest = hashlib.sha256()
    for query in queries:
        digest.update(json.dumps(query.to_json(), ensure_ascii=False, sort_keys=True).encode("utf-8", "replace"))
        digest.update(b"\n")
    return digest.hexdigest()

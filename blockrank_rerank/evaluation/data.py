"""Readers for the shared IR data (TREC DL JSON with BM25 hits, BEIR layout) and the data directory."""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

DATA_DIR_ENV = "BLOCKRANK_DATA_DIR"


def data_dir() -> Path:
    """`$BLOCKRANK_DATA_DIR`, else `../shared/data` from the working directory, else beside this checkout."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    from_cwd = Path.cwd().parent / "shared" / "data"
    if from_cwd.is_dir():
        return from_cwd
    return Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True)
class Candidate:
    docid: str
    text: str
    first_stage_score: float


@dataclass(frozen=True)
class CandidateRun:
    """Queries, their first-stage candidates (best first) and graded relevance judgments."""

    name: str
    queries: dict[str, str]  # qid -> query text
    candidates: dict[str, list[Candidate]]  # qid -> candidates in first-stage order
    qrels: dict[str, dict[str, int]]  # qid -> docid -> grade

    def subset(self, qids: list[str], depth: Optional[int] = None) -> "CandidateRun":
        """Only `qids`, each cut to the first `depth` candidates."""
        return CandidateRun(
            self.name,
            {q: self.queries[q] for q in qids},
            {q: self.candidates[q][:depth] for q in qids},
            {q: self.qrels.get(q, {}) for q in qids},
        )


SCIFACT_DEV_QUERIES = 150  # SciFact train claims held out from training, for choices made on dev data


def scifact_dev_qids(judged: Iterable[str]) -> list[str]:
    """The SciFact train claims held out as dev data ("scifact-dev"), sorted: a seeded sample of the judged ones.

    The same draw as `evaluate.select_queries(run, 150, seed=0)` over the train split; training source
    "scifact-train-fit" is the rest.
    """
    return sorted(random.Random(0).sample(sorted(judged), SCIFACT_DEV_QUERIES))


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_trec_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC qrels (`qid iteration docid grade`, gzip or plain) as {qid: {docid: grade}}, read by ir-measures."""
    import ir_measures

    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for qrel in ir_measures.read_trec_qrels(str(path)):
        qrels[qrel.query_id][qrel.doc_id] = qrel.relevance
    return dict(qrels)


def load_trec_dl(year: str = "dl19", root: Optional[Path] = None) -> CandidateRun:
    """TREC DL passage queries with BM25 top-100 (text included) and qrels, from `trec-dl/`."""
    folder = (root or data_dir()) / "trec-dl"
    with _open(folder / f"{year}-bm25-top100.json.gz") as f:
        entries = json.load(f)
    queries, candidates = {}, {}
    for entry in entries:
        hits = sorted(entry["hits"], key=lambda h: h["rank"])
        qid = str(hits[0]["qid"])
        queries[qid] = entry["query"]
        candidates[qid] = [Candidate(str(h["docid"]), h["content"], float(h["score"])) for h in hits]
    qrels = read_trec_qrels(folder / f"qrels.{year}-passage.txt")
    return CandidateRun(year, queries, candidates, {q: qrels.get(q, {}) for q in queries})


def load_beir(name: str = "scifact", split: str = "test", root: Optional[Path] = None) -> CandidateRun:
    """A BEIR dataset with its shipped BM25 top-100 run (`bm25-top100.<split>.trec.gz`), or, for a split that
    ships none (SciFact train), the same BM25 top-100 of its judged queries built with bm25s."""
    folder = (root or data_dir()) / name
    with _open(folder / "corpus.jsonl.gz") as f:
        corpus = {}
        for line in f:
            doc = json.loads(line)
            corpus[str(doc["_id"])] = f"{doc.get('title', '')} {doc['text']}".strip()
    with _open(folder / f"queries.{split}.jsonl") as f:
        queries = {str(q["_id"]): q["text"] for q in map(json.loads, f)}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with _open(folder / "qrels" / f"{split}.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels[row["query-id"]][row["corpus-id"]] = int(row["score"])
    ranked: dict[str, list[tuple[int, Candidate]]] = defaultdict(list)
    shipped = folder / f"bm25-top100.{split}.trec.gz"
    if shipped.exists():  # read by ir-measures, which keeps scores, not ranks: best first, file order among ties
        import ir_measures

        for position, hit in enumerate(ir_measures.read_trec_run(str(shipped))):
            ranked[hit.query_id].append((position, Candidate(hit.doc_id, corpus[hit.doc_id], hit.score)))
        for hits in ranked.values():
            hits.sort(key=lambda pc: (-pc[1].first_stage_score, pc[0]))
            hits[:] = [(rank, candidate) for rank, (_, candidate) in enumerate(hits, start=1)]
    else:  # no shipped run for this split: the same BM25 built here (bm25.py reproduces the shipped test run)
        from .bm25 import bm25_rankings

        judged_queries = {q: text for q, text in queries.items() if q in qrels}
        for qid, hits in bm25_rankings(corpus, judged_queries, 100).items():
            ranked[qid] = [(rank, Candidate(d, corpus[d], score)) for rank, (d, score) in enumerate(hits, 1)]
    candidates = {q: [c for _, c in sorted(ranked[q], key=lambda rc: rc[0])] for q in queries if q in ranked}
    return CandidateRun(
        f"{name}-{split}",
        {q: queries[q] for q in candidates},
        candidates,
        {q: dict(qrels.get(q, {})) for q in candidates},
    )

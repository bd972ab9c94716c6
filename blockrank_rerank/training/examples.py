"""Training examples: a query with positive and negative passages, read from the training material only.

Every source here is a training split (the data directory's README, `$BLOCKRANK_DATA_DIR/README.md`):
SQuAD v1.1 dev paragraphs, the small MS MARCO, multi-hop and WikiQA sets, SciFact *train* claims and TREC
DL21. The reporting splits (DL19, SciFact test) are refused by name, so a training run can never see an
evaluation query.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from ..evaluation.data import data_dir, load_trec_dl
from ..inputs import SURROGATES

logger = logging.getLogger(__name__)

REPORTING_SPLITS = ("dl19", "scifact-test")


@dataclass(frozen=True)
class RankingExample:
    """One query with the passages that answer it and passages that do not."""

    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]  # hard negatives first-stage order (may be empty: random ones are drawn)
    source: str


def _parse_line(line: str, path: Path, number: int) -> dict:
    """One JSONL line as an object; bad bytes, invalid JSON or a non-object is a ValueError naming file and line."""
    if SURROGATES.search(line):
        raise ValueError(f"{path}: line {number} is not valid UTF-8")
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {number} is not valid JSON: {error.msg}") from None
    except RecursionError:
        raise ValueError(f"{path}: line {number} is JSON nested too deeply") from None
    if not isinstance(item, dict):
        raise ValueError(f"{path}: line {number}: expected a JSON object, got {_kind(item)}")
    return item


def _numbered_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line; a UTF-8 BOM is skipped and CR, LF or CRLF all end a line."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline=None) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, _parse_line(line, path, number)


def _lines(path: Path) -> Iterator[dict]:
    """The object of each non-blank line of a JSONL (or .jsonl.gz) file."""
    return (item for _, item in _numbered_lines(path))


def _clean(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(t.strip() for t in texts if isinstance(t, str) and t.strip())


def _passages(item: dict, key: str, path: Path, number: int) -> tuple[str, ...]:
    """`item[key]` as stripped non-empty passages; anything but a list of strings is a ValueError (a string is
    not split)."""
    value = item.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{path}: line {number}: {key!r} must be a list of strings, got {_kind(value)}")
    for text in value:
        if not isinstance(text, str):
            raise ValueError(
                f"{path}: line {number}: {key!r} must be a list of strings, got a list holding {_kind(text)}"
            )
    return _clean(value)


def _kind(value: object) -> str:
    """A JSON value's kind for an error message: "a string", "a number", "null", ..."""
    kinds = {
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    return kinds.get(type(value), type(value).__name__)


def read_jsonl_examples(path: Path, source: str) -> list[RankingExample]:
    """`{"query", "positives": [...], "negatives": [...]}` lines (`train/` files); malformed: ValueError, empty
    query or no positive: skipped."""
    examples = []
    for number, item in _numbered_lines(path):
        if "query" not in item or "positives" not in item:
            raise ValueError(f"{path}: line {number}: needs the keys 'query' and 'positives', got {sorted(item)}")
        if not isinstance(item["query"], str):
            raise ValueError(f"{path}: line {number}: 'query' must be a string, got {_kind(item['query'])}")
        query, positives, negatives = (
            item["query"].strip(),
            _passages(item, "positives", path, number),
            _passages(item, "negatives", path, number),
        )
        if query and positives:
            examples.append(RankingExample(query, positives, negatives, source))
    return examples


def read_squad(root: Path) -> list[RankingExample]:
    """SQuAD v1.1 dev questions: the gold paragraph against 29 BM25 paragraphs without the answer."""
    folder = root / "train"
    corpus = {int(p["pid"]): p["text"] for p in _lines(folder / "squad-v1.1-dev.corpus.jsonl.gz")}
    return [
        RankingExample(
            q["query"].strip(),
            _clean(corpus[i] for i in q["pos_ids"]),
            _clean(corpus[i] for i in q["neg_ids"]),
            "squad",
        )
        for q in _lines(folder / "squad-v1.1-dev.queries.jsonl.gz")
    ]


def read_trec_dl_train(root: Path, year: str = "dl21", min_grade: int = 2) -> list[RankingExample]:
    """TREC DL BM25 top-100: grade >= `min_grade` passages are positives, grade-0 or unjudged ones negatives."""
    if year in REPORTING_SPLITS:
        raise ValueError(f"{year} is a reporting split and is never used for training")
    run = load_trec_dl(year, root)
    examples = []
    for qid, candidates in run.candidates.items():
        grades = run.qrels.get(qid, {})
        positives = _clean(c.text for c in candidates if grades.get(c.docid, 0) >= min_grade)
        negatives = _clean(c.text for c in candidates if grades.get(c.docid, 0) <= 0)
        if positives:
            examples.append(RankingExample(run.queries[qid], positives, negatives, year))
    return examples


def read_beir_train(
    root: Path, name: str = "scifact", num_negatives: int = 30, without_dev: bool = False
) -> list[RankingExample]:
    """BEIR train queries with their judged documents; negatives are BM25 hits that are not judged (`bm25.py`).

    `without_dev` leaves out the claims held out as dev data (`evaluation.data.scifact_dev_qids`) and takes up
    to 99 negatives, so prompts of up to 100 candidates have BM25 negatives throughout.
    """
    from ..evaluation.bm25 import bm25_rankings

    folder = root / name
    corpus = {str(d["_id"]): f"{d.get('title', '')} {d['text']}".strip() for d in _lines(folder / "corpus.jsonl.gz")}
    queries = {str(q["_id"]): q["text"] for q in _lines(folder / "queries.train.jsonl")}
    judged: dict[str, set[str]] = {}
    with open(folder / "qrels" / "train.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0:
                judged.setdefault(row["query-id"], set()).add(row["corpus-id"])
    if without_dev:
        from ..evaluation.data import scifact_dev_qids

        num_negatives = 99
        for qid in scifact_dev_qids(judged):
            del judged[qid]
    hits = bm25_rankings(corpus, {q: text for q, text in queries.items() if q in judged}, num_negatives + 10)
    examples = []
    for qid, ranked in hits.items():
        negatives = [corpus[docid] for docid, _ in ranked if docid not in judged[qid]][:num_negatives]
        positives = _clean(corpus[d] for d in sorted(judged[qid]) if d in corpus)
        examples.append(RankingExample(queries[qid], positives, _clean(negatives), f"{name}-train"))
    return [e for e in examples if e.positives]


SOURCES: dict[str, Callable[[Path], list[RankingExample]]] = {
    "squad": read_squad,
    "msmarco-small": lambda root: read_jsonl_examples(root / "train" / "msmarco-small.jsonl.gz", "msmarco-small"),
    "multihop-small": lambda root: read_jsonl_examples(root / "train" / "multihop-small.jsonl.gz", "multihop-small"),
    "wikiqa": lambda root: read_jsonl_examples(root / "train" / "wikiqa.jsonl.gz", "wikiqa"),
    "scifact-train": read_beir_train,
    "scifact-train-fit": lambda root: read_beir_train(root, without_dev=True),  # scifact-dev held out
    "dl21": read_trec_dl_train,
}
# The default leaves the dev data out (dl21, and scifact-dev inside scifact-train), so choices made on dev
# data measure queries the model never trained on.
DEFAULT_SOURCES = ("squad", "msmarco-small", "multihop-small", "wikiqa", "scifact-train-fit")


def load_examples(sources: Iterable[str], root: Optional[Path] = None) -> list[RankingExample]:
    """Examples of every named source, in source order; unknown or reporting names raise ValueError."""
    root = root or data_dir()
    examples: list[RankingExample] = []
    for name in sources:
        if name.startswith("jsonl:"):  # a file of your own: {"query", "positives": [...], "negatives": [...]} per line
            loaded = read_jsonl_examples(Path(name[len("jsonl:") :]), name)
            logger.info("training source %s: %d queries", name, len(loaded))
            examples.extend(loaded)
            continue
        if name in REPORTING_SPLITS:
            raise ValueError(f"{name!r} is a reporting split; training sources are {sorted(SOURCES)}")
        if name not in SOURCES:
            raise ValueError(f"unknown training source {name!r}; available: {sorted(SOURCES)} or jsonl:<path>")
        loaded = SOURCES[name](root)
        logger.info("training source %s: %d queries", name, len(loaded))
        examples.extend(loaded)
    if not examples:
        raise ValueError(f"no training examples in sources {list(sources)} under {root}")
    return examples

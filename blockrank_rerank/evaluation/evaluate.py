"""Evaluation harness: rerank a candidate run at a depth, resumably, and score it beside the first stage.

Per-query results are appended to `<output>/per_query.jsonl` as they finish (one JSON object a line:
qid, candidate docids in first-stage order, scores, seconds), so an interrupted run continues where it
stopped: a torn last line (a write cut short by a kill) is removed before new records are appended, so
records stay one per line. At the end the harness writes `<output>/run.trec` (TREC run format) and
`<output>/summary.json` with nDCG@10, MRR@10 and Recall@10/@depth of the reranked lists and of the first
stage on the *same* queries and candidates, plus time per query.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import numbers
import os
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from tqdm.auto import tqdm

from ..base import Reranker
from ..modes import SCORING_MODES
from . import DATASETS, METHODS
from .data import CandidateRun, load_beir, load_trec_dl, scifact_dev_qids
from .metrics import compute_metrics, measures, order_to_scores, ranks_to_scores

logger = logging.getLogger(__name__)

# Grade that counts as relevant for binary measures: TREC DL judges 0-3 and counts >= 2; BEIR is binary.
BINARY_THRESHOLDS = {"dl19": 2, "dl21": 2, "scifact": 1, "scifact-train": 1, "scifact-dev": 1}


Scorer = Reranker  # what the harness scores with: BlockRank and every baseline share the one base (base.py)


def load_dataset(name: str) -> CandidateRun:
    """A shared candidate run by name: "dl19", "dl21" (TREC DL BM25 top-100), "scifact" (BEIR test, BM25 top-100)
    "scifact-train" (its judged train claims, BM25 top-100 built with bm25s) or "scifact-dev" (the 150 of them
    held out from training source "scifact-train-fit"); the last two are dev splits."""
    if name in ("dl19", "dl21"):
        return load_trec_dl(name)
    if name == "scifact":
        return load_beir("scifact", "test")
    if name == "scifact-train":
        return load_beir("scifact", "train")
    if name == "scifact-dev":
        train = load_beir("scifact", "train")
        return dataclasses.replace(train.subset(scifact_dev_qids(train.candidates)), name="scifact-dev")
    raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")


def select_queries(
    run: CandidateRun, num_queries: Optional[int] = None, seed: int = 0, first: bool = False
) -> list[str]:
    """All query ids (sorted), or `num_queries` of them: a random subset drawn with `seed`, or the first ones in
    sorted order."""
    qids = sorted(run.candidates)
    if num_queries is None or num_queries >= len(qids):
        return qids
    if num_queries < 1:
        raise ValueError(f"num_queries must be >= 1 or None, got {num_queries!r}")
    if first:
        return qids[:num_queries]
    return sorted(random.Random(seed).sample(qids, num_queries))


def read_per_query(path: Path) -> dict[str, dict[str, Any]]:
    """Completed per-query records by qid; an unparsable line (an interrupted write) is ignored with a warning.

    A line that parses but is not a per-query record is a ValueError naming the file and line: the directory
    holds something else, and guessing would mix it into the results.
    """
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                logger.warning("%s: ignoring unreadable line %d (interrupted write)", path, number)
                continue
            problem = record_problem(record)
            if problem:
                raise ValueError(
                    f"{path}: line {number} is not a per-query record ({problem}); "
                    "delete the line, or use another --output"
                )
            done[str(record["qid"])] = record
    return done


def record_problem(record: Any) -> str:
    """What makes `record` unusable as a per-query record ("" when nothing does)."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if not isinstance(record.get("qid"), (str, int)) or isinstance(record.get("qid"), bool):
        return "no 'qid' string or int"
    docids, scores = record.get("docids"), record.get("scores")
    if not isinstance(docids, list) or not isinstance(scores, list) or len(docids) != len(scores):
        return "'docids' and 'scores' must be lists of one length"
    if not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in (*scores, record.get("seconds"))):
        return "'scores' and 'seconds' must be numbers"
    return ""


def repair_torn_tail(path: Path) -> None:
    """End `path` with a line break before appending: a torn last line (a killed write) is cut off, a whole
    record gets its newline.

    Without this the next record is appended onto the torn one, and the line stays unreadable on every resume.
    """
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        cut = last_line_start(f, size)
        if cut == size:
            return
        f.seek(cut)
        tail = f.read()
        try:
            whole = not record_problem(json.loads(tail))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            whole = False
        if whole:
            f.write(b"\n")
            return
        f.truncate(cut)
    logger.warning(
        "%s: removed a torn last line of %d bytes (an interrupted write); that query runs again", path, size - cut
    )


def last_line_start(f: Any, size: int, block: int = 1 << 16) -> int:
    """Offset just after the last line break of the open binary file `f` of `size` bytes (0 when there is none)."""
    end = size
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        index = f.read(end - start).rfind(b"\n")
        if index >= 0:
            return start + index + 1
        end = start
    return 0


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; ValueError naming the file when it is not valid JSON or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it, or use another --output") from None
    if not isinstance(value, dict):
        raise ValueError(
            f"{path} holds a JSON {type(value).__name__}, not an object; delete it, or use another --output"
        )
    return value


# Settings that do not change a query's scores: which queries run, and how fast.
VOLATILE_SETTINGS = frozenset({"queries", "seed", "subset", "torch_threads", "device", "memory_budget_mb"})
# What attention-scored runs used before summaries recorded their block settings (the defaults of those versions).
LEGACY_BLOCK_SETTINGS = {
    "max_block_tokens": 384,
    "query_position_offset": 16384,
    "num_signal_tokens": 2,
    "dtype": "float32",
}


def check_resumable(output: Path, identity: Mapping[str, Any]) -> None:
    """Record what produces the per-query records in `output`, or refuse to add records made differently.

    `<output>/identity.json` holds the run, method, depth and score-relevant settings; a later call into the
    same directory with any of them changed raises instead of silently mixing two configurations. A directory
    from before identity files existed is checked against its `summary.json` settings when it has one.
    """
    path = output / "identity.json"
    has_records = bool(read_per_query(output / "per_query.jsonl"))
    stored: Optional[dict[str, Any]] = read_json_object(path) if path.exists() else None
    if stored is None and has_records and (output / "summary.json").exists():
        summary = read_json_object(output / "summary.json")
        settings = summary.get("settings", {})
        if not isinstance(settings, dict):
            raise ValueError(
                f"{output / 'summary.json'}: 'settings' is a JSON {type(settings).__name__}, not an object; "
                "delete it, or use another --output"
            )
        legacy = LEGACY_BLOCK_SETTINGS if summary.get("method") in SCORING_MODES else {}
        stored = {
            "run": summary.get("dataset"),
            "method": summary.get("method"),
            "depth": summary.get("depth"),
            **legacy,
            **{k: v for k, v in settings.items() if k not in VOLATILE_SETTINGS},
        }
    if stored is not None and has_records:
        keys = set(stored) | set(identity) if path.exists() else set(stored) & set(identity)  # a summary records less
        changed = sorted(k for k in keys if stored.get(k) != identity.get(k))
        if changed:
            details = "; ".join(f"{k}: {stored.get(k)!r} then, {identity.get(k)!r} now" for k in changed)
            raise ValueError(
                f"{output} holds results made with other settings ({details}); use another --output or delete it"
            )
    elif has_records:
        logger.warning(
            "%s has per-query records but no identity.json or summary.json: assuming they match %s",
            output,
            dict(identity),
        )
    write_atomically(path, json.dumps(dict(identity), indent=2, sort_keys=True) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename, so a kill leaves the old file or the new
    one, never half of one."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_trec_run(path: Path, run: Mapping[str, Mapping[str, float]], tag: str) -> None:
    """TREC run file: `qid Q0 docid rank score tag`, best first (written atomically)."""
    lines = []
    for qid in sorted(run):
        ranked = sorted(run[qid].items(), key=lambda item: -item[1])
        lines.extend(
            f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n" for rank, (docid, score) in enumerate(ranked, start=1)
        )
    write_atomically(path, "".join(lines))


def evaluate_scorer(
    scorer: Optional[Scorer],
    run: CandidateRun,
    output_dir: Path | str,
    *,
    method: str,
    depth: int = 100,
    qids: Optional[Sequence[str]] = None,
    binary_threshold: int = 1,
    settings: Optional[Mapping[str, Any]] = None,
    show_progress_bar: bool = True,
) -> dict[str, Any]:
    """Rerank the first `depth` candidates of each query in `qids` with `scorer` and write run and summary.

    `scorer=None` keeps the first-stage order (the first-stage baseline through the same plumbing).
    Already completed queries in `<output_dir>/per_query.jsonl` are not recomputed; a directory made with other
    settings (method, depth, model, block settings; see `check_resumable`) is refused.
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    qids = sorted(run.candidates) if qids is None else list(qids)
    missing = [q for q in qids if q not in run.candidates]
    if missing:
        raise ValueError(f"{len(missing)} query ids are not in {run.name}: {missing[:5]}")
    longest = max((len(run.candidates[q]) for q in qids), default=0)
    if depth > longest:  # Recall@depth would silently be Recall@longest
        raise ValueError(
            f"depth={depth} but {run.name} has at most {longest} candidates per query; use --depth {longest} or less"
        )
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    per_query_path = output / "per_query.jsonl"
    repair_torn_tail(per_query_path)
    identity = {
        "run": run.name,
        "method": method,
        "depth": depth,
        **{k: v for k, v in (settings or {}).items() if k not in VOLATILE_SETTINGS},
    }
    check_resumable(output, json.loads(json.dumps(identity)))  # JSON round trip: tuples and lists compare equal
    done = read_per_query(per_query_path)
    todo = [q for q in qids if q not in done]
    if done and todo:
        logger.info("resuming %s: %d of %d queries already done", output, len(qids) - len(todo), len(qids))
    with open(per_query_path, "a", encoding="utf-8") as sink:
        for qid in tqdm(todo, desc=f"{method} on {run.name}", unit="query", disable=not show_progress_bar):
            candidates = run.candidates[qid][:depth]
            texts = [c.text for c in candidates]
            start = time.perf_counter()
            scores = (
                [float(len(texts) - i) for i in range(len(texts))]
                if scorer is None
                else scorer.score(run.queries[qid], texts)
            )
            seconds = time.perf_counter() - start
            if len(scores) != len(texts):
                raise RuntimeError(f"{method} returned {len(scores)} scores for {len(texts)} documents (query {qid})")
            engine = getattr(scorer, "engine", None)  # BlockRank's model device; the baselines are recorded as cpu
            device = str(engine.device) if engine is not None else "cpu"
            record = {
                "qid": qid,
                "docids": [c.docid for c in candidates],
                "scores": [float(s) for s in scores],
                "seconds": seconds,
                "device": device,
            }
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            done[qid] = record
    return summarise(
        run,
        [done[q] for q in qids],
        output,
        method=method,
        depth=depth,
        binary_threshold=binary_threshold,
        settings=settings,
    )


def summarise(
    run: CandidateRun,
    records: Sequence[Mapping[str, Any]],
    output: Path,
    *,
    method: str,
    depth: int,
    binary_threshold: int,
    settings: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Metrics of the reranked records and of the first stage on the same candidates; writes run.trec and
    summary.json."""
    reranked = {r["qid"]: order_to_scores(r["docids"], r["scores"]) for r in records}
    first_stage = {r["qid"]: ranks_to_scores(r["docids"]) for r in records}
    seconds = [float(r["seconds"]) for r in records]
    summary = {
        "method": method,
        "dataset": run.name,
        "depth": depth,
        "num_queries": len(records),
        "qids": [r["qid"] for r in records],
        "binary_threshold": binary_threshold,
        "metrics": compute_metrics(reranked, run.qrels, depth, binary_threshold),
        "first_stage_metrics": compute_metrics(first_stage, run.qrels, depth, binary_threshold),
        "devices": dict(Counter(str(r.get("device", "cpu")) for r in records)),  # queries scored on each device
        "seconds_per_query": {
            "mean": statistics.fmean(seconds) if seconds else 0.0,
            "median": statistics.median(seconds) if seconds else 0.0,
            "total": sum(seconds),
        },
        "settings": dict(settings or {}),
    }
    write_trec_run(output / "run.trec", reranked, method)
    write_atomically(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def build_scorer(
    method: str, model: Optional[str] = None, *, cache_documents: bool = False, **overrides: Any
) -> Optional[Scorer]:
    """The scorer for `method`: a BlockRank scoring mode ("blockrank", "icr", "full"), a baseline, or None.

    `cache_documents` (bi-encoder only) reuses a document's embedding across queries, as a precomputed index would.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if cache_documents and method != "biencoder":
        raise ValueError(f"cache_documents applies to the bi-encoder only, not to method {method!r}")
    if method == "first-stage":
        return None
    if method == "biencoder":
        from .baselines.biencoder import BiEncoder

        return BiEncoder(cache_documents=cache_documents)
    from ..config import BlockRankConfig
    from ..loading import load_model_and_tokenizer
    from ..reranker import BlockRank

    if method in SCORING_MODES:
        return BlockRank.from_pretrained(model, **{**overrides, "scoring_mode": method})
    config = BlockRankConfig(**overrides)
    lm, tokenizer, _ = load_model_and_tokenizer(model, config.torch_dtype, config.device)
    if method == "pointwise":
        from .baselines.pointwise import PointwiseRelevance

        return PointwiseRelevance(lm, tokenizer)
    from .baselines.listwise import ListwisePermutation

    return ListwisePermutation(lm, tokenizer)


def format_summary(summary: Mapping[str, Any]) -> str:
    """A two-row plain-text table: the method and the first stage on the same candidates."""
    names = [str(m) for m in measures(summary["depth"], summary["binary_threshold"])]
    lines = [
        f"{summary['method']} on {summary['dataset']}: {summary['num_queries']} queries, depth {summary['depth']}, "
        f"{summary['seconds_per_query']['mean']:.2f} s/query"
    ]
    lines.append(f"{'':14}" + "".join(f"{n:>16}" for n in names))
    lines.append(f"{summary['method'][:14]:14}" + "".join(f"{summary['metrics'][n]:16.4f}" for n in names))
    lines.append(f"{'first stage':14}" + "".join(f"{summary['first_stage_metrics'][n]:16.4f}" for n in names))
    return "\n".join(lines)

"""`blockrank demo`: rerank real DL19 BM25 candidates (or a built-in corpus) and print readable tables."""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from pathlib import Path
from typing import Optional

from ..reranker import BlockRank
from .data import data_dir, load_trec_dl
from .demo_corpus import DEMO_QUERIES
from .metrics import compute_metrics, ranks_to_scores


def _snippet(text: str, width: int) -> str:
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder="...")


def _table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    width = max(60, shutil.get_terminal_size((120, 20)).columns)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    text_width = max(20, width - sum(widths) - 2 * len(widths) - 1)
    fmt = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r[:-1], widths)) + "  " + _snippet(str(r[-1]), text_width)  # noqa: E731
    return "\n".join([title, fmt(header), *[fmt(r) for r in rows]])


def demo_dl19(ranker: BlockRank, num_queries: int, depth: int, shown: int) -> None:
    run = load_trec_dl("dl19")
    qids = list(run.queries)[:num_queries]
    reranked_run, bm25_run = {}, {}
    start = time.perf_counter()
    for qid in qids:
        candidates = run.candidates[qid][:depth]
        result = ranker.rerank(run.queries[qid], [{"text": c.text, "id": c.docid} for c in candidates])
        grades = run.qrels[qid]
        rows = [
            (d.rank, f"{d.score:.3f}", d.index + 1, "*" * grades.get(d.id, 0) or "-", d.text)
            for d in result.top_k(shown)
        ]
        print(_table(f"\nQuery {qid}: {run.queries[qid]}", rows, ("rank", "score", "bm25", "rel", "passage")))
        reranked_run[qid] = {d.id: d.score for d in result}
        bm25_run[qid] = ranks_to_scores([c.docid for c in candidates])
    elapsed = time.perf_counter() - start
    ours, bm25 = compute_metrics(reranked_run, run.qrels, depth, 2), compute_metrics(bm25_run, run.qrels, depth, 2)
    print(
        f"\nTREC DL19, {len(qids)} queries, BM25 top-{depth} ({elapsed / len(qids):.1f} s per query)"
        f"\n  nDCG@10  BlockRank {ours['nDCG@10']:.4f}   BM25 {bm25['nDCG@10']:.4f}"
        "\n  rel: relevance grade from the TREC qrels (* to ***), - not relevant or unjudged"
    )


def demo_builtin(ranker: BlockRank, num_queries: Optional[int] = None) -> None:
    """Rerank the built-in corpus's queries (the first `num_queries` of them; None: all)."""
    for item in DEMO_QUERIES[:num_queries]:
        result = ranker.rerank(item["query"], item["documents"])
        rows = [(d.rank, f"{d.score:.3f}", "yes" if d.index in item["relevant"] else "-", d.text) for d in result]
        print(_table(f"\nQuery: {item['query']}", rows, ("rank", "score", "relevant", "passage")))


def run_demo(
    model: Optional[str] = None, num_queries: int = 3, depth: int = 20, shown: int = 10, builtin: bool = False
) -> None:
    """Load the model (embedded default unless `model`) and rerank DL19 when the data is present, else the
    built-in corpus."""
    start = time.perf_counter()
    ranker = BlockRank.from_pretrained(model)
    print(f"{ranker}  (loaded in {time.perf_counter() - start:.1f} s)")
    if not builtin and (data_dir() / "trec-dl" / "dl19-bm25-top100.json.gz").is_file():
        demo_dl19(ranker, num_queries, depth, shown)
    else:
        if not builtin:
            print(
                f"(no DL19 data at {shown_path(data_dir())}; set BLOCKRANK_DATA_DIR for the DL19 demo; "
                "using the built-in corpus)"
            )
        demo_builtin(ranker, num_queries)


def shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it or beside it (../shared/data), else absolute."""
    absolute = path.resolve()
    relative = os.path.relpath(absolute, Path.cwd())
    return relative if not relative.startswith(os.path.join("..", "..")) else str(absolute)

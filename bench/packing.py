"""Multi-query packing: queries per second of `rerank_batch` with one forward per query against packed forwards.

Eight DL19 queries (the first by id) over their BM25 top-N, the default model in its default dtype, one process.
Each setting reranks the same eight queries; settings run alternately per repeat, so machine noise hits them alike.
"packed" is `rerank_batch(batch_size=8)` with the default `max_pack_tokens`; "packed, no token cap" lets all eight
prompts share one forward whatever their size. Scores are checked against one query at a time.
Usage: python bench/packing.py [--n 20 100] [--queries 8] [--repeats 2]   (writes the "packing" section)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, write_section  # noqa: E402

from blockrank_rerank import BlockRank  # noqa: E402
from blockrank_rerank.config import BlockRankConfig  # noqa: E402
from blockrank_rerank.evaluation.data import load_trec_dl  # noqa: E402

UNCAPPED = 1 << 30


def settings(queries: int) -> dict[str, tuple[int, int]]:
    """Name -> (batch_size, max_pack_tokens) of each compared setting."""
    default_cap = BlockRankConfig.__dataclass_fields__["max_pack_tokens"].default
    return {
        "one forward per query": (1, default_cap),
        f"packed (batch {queries})": (queries, default_cap),
        f"packed (batch {queries}), no token cap": (queries, UNCAPPED),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    run = load_trec_dl("dl19")
    qids = sorted(run.candidates)[: args.queries]
    base = BlockRank.from_pretrained()
    rankers = {
        name: (BlockRank(base.engine.model, base.engine.tokenizer, base.config.replace(max_pack_tokens=cap)), size)
        for name, (size, cap) in settings(args.queries).items()
    }
    rows = []
    for n in args.n:
        queries = [run.queries[qid] for qid in qids]
        documents = [[c.text for c in run.candidates[qid][:n]] for qid in qids]
        layouts = [base.engine.layout(q, d) for q, d in zip(queries, documents)]
        tokens = [layout.num_tokens for layout in layouts]
        times: dict[str, list[float]] = {name: [] for name in rankers}
        results = {}
        for _ in range(args.repeats):
            for name, (ranker, size) in rankers.items():
                start = time.perf_counter()
                results[name] = ranker.rerank_batch(queries, documents, batch_size=size, show_progress_bar=False)
                times[name].append(time.perf_counter() - start)
                print(n, name, f"{times[name][-1]:.2f} s", flush=True)
        reference_name = next(iter(rankers))
        reference = results[reference_name]
        base_rate = args.queries / statistics.median(times[reference_name])
        for name, (ranker, size) in rankers.items():
            batches = [layouts[start : start + size] for start in range(0, len(layouts), size)]
            forwards = sum(len(ranker.engine.packs(batch)) for batch in batches)  # as rerank_batch runs them
            difference = max(
                abs(a.score - b.score)
                for ranked, expected in zip(results[name], reference)
                for a, b in zip(sorted(ranked, key=lambda d: d.index), sorted(expected, key=lambda d: d.index))
            )
            rate = args.queries / statistics.median(times[name])
            rows.append(
                f"| {n} | {min(tokens)}-{max(tokens)} | {name} | {forwards} | {rate:.3f} | {rate / base_rate:.2f}x | "
                f"{difference:.1e} |"
            )
            print(rows[-1], flush=True)
    cap = BlockRankConfig.__dataclass_fields__["max_pack_tokens"].default
    body = [
        "## Multi-query packing: `rerank_batch` queries per second (CPU, embedded default model)",
        "",
        f"`python bench/packing.py` on **{machine_line()}**; dtype `{base.config.dtype}` (the default here). "
        f"{args.queries} DL19 queries over their BM25 top-N; median of {args.repeats} runs per setting, settings "
        f"alternating. Default `max_pack_tokens` = {cap}. Score difference: largest absolute difference from one "
        f"forward per query. Load average before the run: {load_before:.1f} on {os.cpu_count()} cores.",
        "",
        "| N | tokens per prompt | setting | forwards | queries/s | vs one per query | max score difference |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    write_section("packing", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()

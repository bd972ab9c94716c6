"""Dev choice of how a split document's blocks make its score (issue 19): "sum" of shares or "max", on scifact-dev.

Both aggregates come from the same forward per query (the block shares are read once), so the comparison costs one
split run. Writes docs/results/split-choice-scifact-dev.json; `bench/results_runs.sh split` then evaluates the chosen
aggregate against truncation on SciFact test.

    python bench/split_choice.py --queries 10 [--depth 100] [--max-document-blocks 8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from blockrank_rerank import BlockRank
from blockrank_rerank.config import SPLIT_SCORES
from blockrank_rerank.engine import document_of_blocks
from blockrank_rerank.evaluation.evaluate import load_dataset, select_queries
from blockrank_rerank.evaluation.metrics import compute_metrics, order_to_scores

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "split-choice-scifact-dev.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10, help="seeded subset of scifact-dev queries")
    parser.add_argument("--depth", type=int, default=100, help="BM25 candidates per query")
    parser.add_argument("--max-document-blocks", type=int, default=8)
    args = parser.parse_args()
    run = load_dataset("scifact-dev")
    qids = select_queries(run, args.queries, seed=0)
    ranker = BlockRank.from_pretrained(long_documents="split", max_document_blocks=args.max_document_blocks)
    engine = ranker.engine
    runs: dict[str, dict[str, dict[str, float]]] = {how: {} for how in SPLIT_SCORES}
    blocks, start = [], time.perf_counter()
    for number, qid in enumerate(qids):
        candidates = run.candidates[qid][: args.depth]
        layout = engine.layout(run.queries[qid], [c.text for c in candidates])
        shares = engine.score_layout(layout)  # (blocks,)
        blocks.append(len(shares) / len(candidates))
        docids = [c.docid for c in candidates]
        for how in SPLIT_SCORES:
            scores = document_of_blocks(shares, layout.document_of_block, len(candidates), how).tolist()
            runs[how][qid] = order_to_scores(docids, scores)
        print(f"{qid} ({number + 1}/{len(qids)})", flush=True)
    metrics = {how: compute_metrics(runs[how], run.qrels, args.depth, 1) for how in SPLIT_SCORES}
    chosen = max(SPLIT_SCORES, key=lambda how: (metrics[how]["nDCG@10"], how == "sum"))  # a tie keeps "sum"
    summary = {
        "dataset": "scifact-dev",
        "depth": args.depth,
        "num_queries": len(qids),
        "qids": qids,
        "max_document_blocks": args.max_document_blocks,
        "max_block_tokens": ranker.config.max_block_tokens,
        "mean_blocks_per_document": sum(blocks) / len(blocks),
        "metrics": metrics,
        "chosen": chosen,
        "seconds_per_query": (time.perf_counter() - start) / len(qids),
        "command": f"python bench/split_choice.py --queries {args.queries} --depth {args.depth}",
    }
    OUTPUT.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("metrics", "chosen", "mean_blocks_per_document")}, indent=2))


if __name__ == "__main__":
    main()

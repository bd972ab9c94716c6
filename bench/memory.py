"""Peak memory and latency of exact chunked scoring against the one-shot path, at thousands of candidates.

Documents are DL19 BM25 passages joined three at a time and cut to `--block` tokens (160: every document
block is exactly 160 tokens), scored for the first DL19 query by the embedded default model in fp32. Each
cell runs in a fresh subprocess; peak memory is the kernel's resident-set high-water mark (VmHWM, reset
just before the call) minus the resident set at that moment, so model weights and the tokenised layout are
excluded. Writes the "memory" section of docs/benchmarks.md.
Usage: python bench/memory.py [--n 500 2000] [--budgets 2048 512] [--one-shot-max-n 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HighWaterRSS, machine_line, write_section  # noqa: E402

from scaling import candidate_texts  # noqa: E402


def documents(n: int) -> tuple[str, list[str]]:
    """The first DL19 query and `n` documents, each three consecutive distinct passages joined."""
    query, pool = candidate_texts(min(3 * n, 4000))
    return query, [" ".join(pool[(3 * i + j) % len(pool)] for j in range(3)) for i in range(n)]


def child(n: int, budget: float | None, block: int) -> dict:
    """One measurement in this process: scores, seconds and peak memory of one call."""
    from blockrank_rerank import BlockRank

    base = BlockRank.from_pretrained()
    ranker = BlockRank(
        base.engine.model,
        base.engine.tokenizer,
        base.config.replace(max_block_tokens=block, memory_budget_mb=budget),
        name=base.engine.name,
    )
    query, docs = documents(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every document is cut to the block size on purpose
        warm, layout = ranker.engine.layout(query, docs[:3]), ranker.engine.layout(query, docs)
    ranker.engine.score_layout(warm)  # warm-up: allocator and thread pools
    plan = ranker.engine.execution_plan(layout)
    with HighWaterRSS() as memory:
        start = time.perf_counter()
        scores = ranker.engine.score_layout(layout)
        seconds = time.perf_counter() - start
    return {
        "n": n,
        "budget_mb": budget,
        "tokens": layout.num_tokens,
        "document_tokens": sum(layout.document_lengths),
        "chunk_tokens": plan.chunk_tokens,
        "spill": plan.spill,
        "estimated_mb": plan.estimated_bytes / 2**20,
        "seconds": seconds,
        "peak_mb": memory.peak_above_start / 2**20,
        "scores": scores.tolist(),
    }


def run_child(n: int, budget: float | None, block: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        str(n),
        "none" if budget is None else str(budget),
        "--block",
        str(block),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: list[dict], block: int) -> str:
    lines = [
        "## Exact chunked scoring: peak memory at thousands of candidates (CPU, embedded default model)",
        "",
        f"`python bench/memory.py` on {machine_line()}; SmolLM2-135M-Instruct fp32, L* = 19 of 30 layers,",
        f"first DL19 query, documents of three BM25 passages cut to {block} tokens. Peak memory is the resident-set",
        "high-water mark during one `score_layout` call above the resident set when it started (weights and the",
        "tokenised prompt excluded), each row in a fresh process. `memory_budget_mb` none = the one-shot path.",
        "",
        (
            "| N | tokens | memory_budget_mb | path | chunk tokens | estimated MB | peak MB | seconds | "
            "max abs diff vs one shot |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    one_shot = {r["n"]: torch.tensor(r["scores"]) for r in results if r["chunk_tokens"] is None}
    for r in results:
        path = (
            "one shot"
            if r["chunk_tokens"] is None
            else ("chunked, spilled to disk" if r["spill"] else "chunked, in memory")
        )
        diff = (
            f"{float((torch.tensor(r['scores']) - one_shot[r['n']]).abs().max()):.1e}"
            if r["n"] in one_shot and r["chunk_tokens"]
            else "-"
        )
        budget = "none" if r["budget_mb"] is None else f"{r['budget_mb']:g}"
        chunk = "-" if r["chunk_tokens"] is None else str(r["chunk_tokens"])
        lines.append(
            f"| {r['n']} | {r['tokens']} | {budget} | {path} | {chunk} | {r['estimated_mb']:.0f} | "
            f"{r['peak_mb']:.0f} | {r['seconds']:.0f} | {diff} |"
        )
    lines += [
        "",
        "Chunked memory is the document hidden states of one layer (tokens x 576 fp32 values, 2.25 KB a token),",
        "unless spilled, plus one chunk's working set; the one-shot path holds every layer activation of every",
        "token at once. Seconds are wall time on a shared 2-core machine (other jobs may have run alongside).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[500, 2000])
    parser.add_argument(
        "--budgets", type=float, nargs="+", default=[2048, 512], help="memory_budget_mb values of the chunked cells"
    )
    parser.add_argument("--one-shot-max-n", type=int, default=2000, help="largest N also run on the one-shot path")
    parser.add_argument("--block", type=int, default=160, help="max_block_tokens")
    parser.add_argument("--no-write", action="store_true", help="print the table without touching docs/benchmarks.md")
    parser.add_argument("--child", nargs=2, metavar=("N", "BUDGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        budget = None if args.child[1] == "none" else float(args.child[1])
        print(json.dumps(child(int(args.child[0]), budget, args.block)))
        return
    results = []
    for n in args.n:
        budgets = ([None] if n <= args.one_shot_max_n else []) + list(args.budgets)
        for budget in budgets:
            result = run_child(n, budget, args.block)
            print(
                f"N={n:5d} budget={budget!s:6} chunk={result['chunk_tokens']!s:7} spill={result['spill']!s:5} "
                f"est={result['estimated_mb']:7.0f} MB peak={result['peak_mb']:7.0f} MB {result['seconds']:7.1f} s",
                flush=True,
            )
            results.append(result)
    text = report(results, args.block)
    if not args.no_write:
        write_section("memory", text)
    print(text)


if __name__ == "__main__":
    main()

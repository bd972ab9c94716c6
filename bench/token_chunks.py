"""Per-token steps in chunks on CPU: latency of one call for each `forward.TOKEN_CHUNK`, side by side in one process.

Norms, projections, RoPE, residual adds and the MLP are per token; run over the whole (T, C) stream, each of
them streams it through memory once, and at thousands of tokens that stops fitting in cache. `token_chunks` runs
them on row chunks instead. This script times the default model on DL19 prompts (the first query; N candidates
from its BM25 list, then other queries' passages, as bench/scaling.py) with each chunk size, calls alternating,
and reports the median. "whole stream" is no chunking at all.
Usage: python bench/token_chunks.py [--n 100 500] [--chunks 512 1024 2048 4096] [--repeats 3] [--dtype auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, write_section  # noqa: E402
from scaling import candidate_texts  # noqa: E402

from blockrank_rerank import BlockRank, forward  # noqa: E402

WHOLE = 1 << 30  # a chunk larger than any stream: the per-token steps run on the whole stream at once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--chunks", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    load_before, default = os.getloadavg()[0], forward.TOKEN_CHUNK
    ranker = BlockRank.from_pretrained(dtype=args.dtype)
    sizes = [WHOLE, *args.chunks]
    name = lambda size: "whole stream" if size == WHOLE else str(size)  # noqa: E731
    rows = []
    for n in args.n:
        query, documents = candidate_texts(n)
        layout = ranker.engine.layout(query, documents)
        ranker.engine.score_layout(ranker.engine.layout(query, documents[:3]))  # warm-up
        times: dict[int, list[float]] = {size: [] for size in sizes}
        for _ in range(args.repeats):
            for size in sizes:
                forward.TOKEN_CHUNK = size
                start = time.perf_counter()
                ranker.engine.score_layout(layout)
                times[size].append(time.perf_counter() - start)
                print(n, name(size), f"{times[size][-1]:.2f} s", flush=True)
        whole = statistics.median(times[WHOLE])
        cells = " | ".join(f"{statistics.median(times[size]):.2f}" for size in sizes)
        best = min(args.chunks, key=lambda size: statistics.median(times[size]))
        rows.append(f"| {n} | {layout.num_tokens} | {cells} | {best} ({whole / statistics.median(times[best]):.2f}x) |")
        print(rows[-1], flush=True)
    header = " | ".join(name(size) for size in sizes)
    body = [
        "## Per-token steps in row chunks on CPU (`forward.TOKEN_CHUNK`)",
        "",
        f"`python bench/token_chunks.py` on **{machine_line()}**; default model in `{ranker.config.dtype}`, first "
        f"DL19 query over N BM25 passages; median seconds of {args.repeats} calls per chunk size, calls alternating. "
        f"Load average before the run: {load_before:.1f} on {os.cpu_count()} cores. The library's default: "
        f"`TOKEN_CHUNK = {default}`.",
        "",
        f"| N | tokens | {header} | fastest chunk (vs whole stream) |",
        "|---|---|" + "---|" * len(sizes) + "---|",
        *rows,
    ]
    write_section("token-chunks", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()

"""Latency and peak memory vs number of candidates N for BlockRank against full causal attention.

Modes, all on the same prompt and the embedded default model in its default dtype (`dtype="auto"`), measured side
by side in one run:
  (a) block-sparse attention, layers 0..L* only (BlockRank inference)
  (b) full causal attention, layers 0..L* only
  (c) full causal attention, every layer and the LM head (a plain forward)
  (a) again in float32 (the exact path, beside the default dtype)
Each (mode, N) runs in a fresh subprocess so its peak resident memory is its own. Writes the "scaling"
section of docs/benchmarks.md. Usage: python bench/scaling.py [--n 10 20 50 100 200 500] [--full-max-n 200];
`--flops-only` writes the "scaling-flops" section (FLOP ratios, the bound on the speed-up) without timing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakRSS, machine_line, matmul_gflops, write_section  # noqa: E402

MODES = {
    "a": {"scoring_mode": "blockrank", "early_exit": True},
    "b": {"scoring_mode": "full", "early_exit": True},
    "c": {"scoring_mode": "full", "early_exit": False},
    "a32": {"scoring_mode": "blockrank", "early_exit": True, "dtype": "float32"},
}
MODE_NAMES = {
    "a": "(a) block-sparse + early exit",
    "b": "(b) full causal + early exit",
    "c": "(c) full causal, all layers",
    "a32": "(a) in float32",
}
FULL_MODES = ("b", "c")  # quadratic in N: capped by --full-max-n


def candidate_texts(n: int) -> tuple[str, list[str]]:
    """The first DL19 query and n BM25 passages: its own top-100, then other queries' passages in order."""
    from blockrank_rerank.evaluation.data import load_trec_dl

    run = load_trec_dl("dl19")
    first = next(iter(run.queries))
    pool, seen = [], set()
    for qid in [first, *run.queries]:
        for c in run.candidates[qid]:
            if c.docid not in seen:
                seen.add(c.docid)
                pool.append(c.text)
    if n > len(pool):
        raise ValueError(f"only {len(pool)} distinct DL19 passages available, asked for {n}")
    return run.queries[first], pool[:n]


def forward_flops(model_config, layout, layers: int, blockrank: bool) -> float:
    """Multiply-add FLOPs (x2) of `layers` decoder layers over `layout`: projections, MLP and attention."""
    c = model_config.hidden_size
    h = model_config.num_attention_heads
    kv = model_config.num_key_value_heads
    d = getattr(model_config, "head_dim", None) or c // h
    linear_per_token = 2 * (c * h * d + 2 * c * kv * d + h * d * c + 3 * c * model_config.intermediate_size)
    t = layout.num_tokens
    if blockrank:
        p, q = layout.prefix_length, layout.query_length
        pairs = p * p / 2 + sum(n * p + n * n / 2 for n in layout.document_lengths) + q * (t - q) + q * q / 2
    else:
        pairs = t * t / 2
    attention = 4 * h * d * pairs  # QK^T and PV, 2 FLOPs per multiply-add each
    return layers * (linear_per_token * t + attention)


def flop_bounds(ns: list[int]) -> str:
    """The (c)/(a) and (b)/(a) FLOP ratios per N: the speed-ups (a) reaches if every mode runs at the same FLOP rate."""
    from blockrank_rerank import BlockRank

    base = BlockRank.from_pretrained()
    config = base.engine.model.config
    lines = [
        "## FLOP bound of the speed-up (same prompts as the scaling table)",
        "",
        "`python bench/scaling.py --flops-only`: FLOPs of each mode from the token counts and the model's shapes",
        (
            "(projections, MLP, and the attention pairs each mode computes; `forward_flops`). "
            "When all modes run at the same"
        ),
        "FLOP rate, the measured (c)/(a) time ratio equals the FLOP ratio, so this is what this model can reach.",
        "",
        "| N | tokens | (a) TFLOP | (b) TFLOP | (c) TFLOP | (c)/(a) FLOPs | (b)/(a) FLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in ns:
        query, docs = candidate_texts(n)
        sparse = base.engine.layout(query, docs)
        full = BlockRank(
            base.engine.model, base.engine.tokenizer, base.config.replace(scoring_mode="full"), name=base.engine.name
        ).engine.layout(query, docs)
        a = forward_flops(config, sparse, base.engine.scoring_layer, blockrank=True)
        b = forward_flops(config, full, base.engine.scoring_layer, blockrank=False)
        c = forward_flops(config, full, base.engine.num_layers, blockrank=False)
        lines.append(
            f"| {n} | {sparse.num_tokens} | {a / 1e12:.2f} | {b / 1e12:.2f} | {c / 1e12:.2f} | "
            f"{c / a:.2f}x | {b / a:.2f}x |"
        )
    return "\n".join(lines)


def child(mode: str, n: int, repeats: int) -> dict:
    """Run one (mode, N) measurement in this process and return its figures."""
    from blockrank_rerank import BlockRank

    ranker = BlockRank.from_pretrained(**MODES[mode])  # the model's own settings, the mode's overrides
    query, docs = candidate_texts(n)
    layout = ranker.engine.layout(query, docs)
    ranker.engine.score_layout(ranker.engine.layout(query, docs[:3]))  # warm-up: allocator and thread pools
    with PeakRSS() as memory:
        start = time.perf_counter()
        ranker.engine.score_layout(layout)
        times = [time.perf_counter() - start]
    for _ in range(repeats - 1):
        start = time.perf_counter()
        ranker.engine.score_layout(layout)
        times.append(time.perf_counter() - start)
    layers = ranker.engine.scoring_layer if MODES[mode]["early_exit"] else ranker.engine.num_layers
    flops = forward_flops(ranker.engine.model.config, layout, layers, blockrank=mode == "a")
    return {
        "mode": mode,
        "n": n,
        "tokens": layout.num_tokens,
        "seconds": min(times),
        "peak_mb": memory.peak_above_start / 2**20,
        "flops": flops,
        "dtype": ranker.config.dtype,
    }


def fit(ns: list[int], seconds: list[float]) -> tuple[float, float, float, float]:
    """Linear fit seconds = a + b*N with R^2, and the log-log slope (1.0 means linear)."""
    x, y = np.array(ns, float), np.array(seconds, float)
    b, a = np.polyfit(x, y, 1)
    r2 = 1 - ((y - (a + b * x)) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    return a, b, r2, slope


def report(results: list[dict], rooflines: dict[str, tuple[float, float]]) -> str:
    """The scaling section; `rooflines` maps a dtype name to its `torch.mm` rate (GFLOP/s) before and after."""
    by = {(r["mode"], r["n"]): r for r in results}
    ns = sorted({r["n"] for r in results})
    dtype = by[("a", ns[0])]["dtype"]
    roofline = max(rooflines["bfloat16" if dtype.startswith("bfloat16") else "float32"])
    rates = "; ".join(f"{name} {before:.0f} before, {after:.0f} after" for name, (before, after) in rooflines.items())
    lines = [
        "## Scaling with the number of candidates (CPU, embedded default model)",
        "",
        f"`python bench/scaling.py` on **{machine_line()}**; SmolLM2-135M-Instruct, L* = 19 of 30 layers,",
        f"(a), (b), (c) in the default dtype, which resolves to `{dtype}` here, and (a) in float32 beside them;",
        "first DL19 query over BM25 passages (packed, no padding). Latency is the best of the repeats; peak",
        "memory is resident-set growth during one call, in a fresh process per cell.",
        f"`torch.mm` rates (GFLOP/s) measured in the same run: {rates}.",
        "",
        (
            "| N | tokens | (a) s | (b) s | (c) s | (a) fp32 s | (c)/(a) | (c)/(a) FLOPs | (b)/(a) | (a) fp32/(a) | "
            "(a) MB | (b) MB | (c) MB | (a) GFLOP/s | (a) % of mm |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cell = lambda m, n, k, f: f.format(by[(m, n)][k]) if (m, n) in by else "not run"  # noqa: E731
    for n in ns:
        a = by[("a", n)]
        ratio = lambda m: f"{by[(m, n)]['seconds'] / a['seconds']:.2f}x" if (m, n) in by else "not run"  # noqa: E731
        flop_ratio = f"{by[('c', n)]['flops'] / a['flops']:.2f}x" if ("c", n) in by else "not run"
        rate = a["flops"] / a["seconds"] / 1e9
        lines.append(
            f"| {n} | {a['tokens']} | {cell('a', n, 'seconds', '{:.2f}')} | {cell('b', n, 'seconds', '{:.2f}')} | "
            f"{cell('c', n, 'seconds', '{:.2f}')} | {cell('a32', n, 'seconds', '{:.2f}')} | {ratio('c')} | "
            f"{flop_ratio} | {ratio('b')} | {ratio('a32')} | "
            f"{cell('a', n, 'peak_mb', '{:.0f}')} | "
            f"{cell('b', n, 'peak_mb', '{:.0f}')} | {cell('c', n, 'peak_mb', '{:.0f}')} | "
            f"{rate:.0f} | {100 * rate / roofline:.0f}% |"
        )
    lines += ["", "Fit of latency against N (least squares):", ""]
    for mode in MODES:
        points = [(n, by[(mode, n)]["seconds"]) for n in ns if (mode, n) in by]
        if len(points) >= 3:
            a_, b_, r2, slope = fit([p[0] for p in points], [p[1] for p in points])
            lines.append(
                f"- {MODE_NAMES[mode]}: {a_:.3f} s + {1000 * b_:.1f} ms x N (R^2 = {r2:.4f}); log-log slope {slope:.2f}"
            )
    skipped = [n for n in ns if ("c", n) not in by]
    if skipped:
        lines += [
            "",
            f"(b) and (c) were not run at N = {', '.join(map(str, skipped))}: quadratic attention over "
            f"{by[('a', skipped[0])]['tokens']}+ tokens takes many minutes on 2 cores (`--full-max-n` raises the cap).",
        ]
    lines += [
        "",
        "GFLOP/s counts projections, MLP and the attention actually needed by (a); % of mm compares it with the",
        f"better of the two `torch.mm` measurements above in (a)'s matmul dtype ({dtype}).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500])
    parser.add_argument("--full-max-n", type=int, default=200, help="largest N for the full-attention modes (b), (c)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell for N <= 100 (1 above)")
    parser.add_argument("--flops-only", action="store_true", help="write only the FLOP-bound section (no timing)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flops_only:
        text = flop_bounds(args.n)
        write_section("scaling-flops", text)
        print(text)
        return
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.repeats)))
        return
    roofline_start = {name: matmul_gflops(getattr(torch, name)) for name in ("float32", "bfloat16")}
    results = []
    for n in args.n:
        for mode in MODES:
            if mode in FULL_MODES and n > args.full_max_n:
                continue
            repeats = args.repeats if n <= 100 else 1
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(n), "--repeats", str(repeats)],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{MODE_NAMES[mode]:32s} N={n:4d} tokens={result['tokens']:6d} {result['seconds']:8.2f} s "
                f"{result['peak_mb']:8.0f} MB",
                flush=True,
            )
            results.append(result)
    rooflines = {name: (before, matmul_gflops(getattr(torch, name))) for name, before in roofline_start.items()}
    text = report(results, rooflines)
    write_section("scaling", text)
    print(text)


if __name__ == "__main__":
    main()

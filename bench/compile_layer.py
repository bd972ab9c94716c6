"""torch.compile (inductor) of the per-token halves of the layer step against eager, side by side in one process.

The layer step is `normed_qkv` (norm, projections, RoPE) -> attention -> `attention_output_and_mlp` (output
projection, residual adds, norm, MLP); on CPU both per-token halves run on row chunks of `TOKEN_CHUNK` rows, so a
compiled chunk function sees few shapes. This script swaps the chunk functions of `forward` for compiled ones
(fusing norms, RoPE, residual adds and the MLP's activation into fewer kernels), times the first call (compile
time included) and the median of the next calls against eager, and checks the scores.
Usage: python bench/compile_layer.py [--n 100] [--repeats 3] [--dtype auto]   (writes the "compile-layer" section)
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
from scaling import candidate_texts  # noqa: E402

from blockrank_rerank import BlockRank, forward  # noqa: E402


def compiled_steps() -> dict[str, object]:
    """Compiled per-chunk functions: norm + projections + RoPE, and output projection + residuals + MLP."""
    eager_project = forward.project_qkv

    def chunk_rest(layer, hidden, out):
        mixed = hidden + forward.output_projection(layer.self_attn, out)
        return mixed + layer.mlp(layer.post_attention_layernorm(mixed))

    norm_project = torch.compile(
        lambda layer, hidden, cos, sin: eager_project(layer.self_attn, layer.input_layernorm(hidden), cos, sin),
        dynamic=False,
    )
    return {"norm_project": norm_project, "rest": torch.compile(chunk_rest, dynamic=False)}


def run_compiled(ranker: BlockRank, layout, steps: dict[str, object]) -> torch.Tensor:
    """One call with the layer step's per-token halves compiled (chunk by chunk, as `token_chunks` cuts them)."""
    eager_qkv, eager_rest = forward.normed_qkv, forward.attention_output_and_mlp

    def normed_qkv(layer, hidden, cos, sin):
        parts = [
            steps["norm_project"](layer, hidden[rows], cos[rows], sin[rows])
            for rows in forward.token_chunks(hidden.shape[0], hidden.device)
        ]
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.cat(pieces, dim=1) for pieces in zip(*parts))

    def attention_output_and_mlp(layer, hidden, out):
        parts = [
            steps["rest"](layer, hidden[rows], out[:, rows])
            for rows in forward.token_chunks(hidden.shape[0], hidden.device)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    forward.normed_qkv, forward.attention_output_and_mlp = normed_qkv, attention_output_and_mlp
    try:
        return ranker.engine.score_layout(layout)
    finally:
        forward.normed_qkv, forward.attention_output_and_mlp = eager_qkv, eager_rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    ranker = BlockRank.from_pretrained(dtype=args.dtype)
    query, documents = candidate_texts(args.n)
    layout = ranker.engine.layout(query, documents)
    eager_scores = ranker.engine.score_layout(layout)  # warm-up
    steps = compiled_steps()
    start = time.perf_counter()
    compiled_scores = run_compiled(ranker, layout, steps)
    first = time.perf_counter() - start
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        ranker.engine.score_layout(layout)
        times["eager"].append(time.perf_counter() - start)
        start = time.perf_counter()
        run_compiled(ranker, layout, steps)
        times["compiled"].append(time.perf_counter() - start)
        print({name: f"{values[-1]:.2f}" for name, values in times.items()}, flush=True)
    eager, compiled = statistics.median(times["eager"]), statistics.median(times["compiled"])
    difference = float((eager_scores - compiled_scores).abs().max())
    body = [
        "## torch.compile of the layer step's per-token halves (CPU, embedded default model)",
        "",
        f"`python bench/compile_layer.py` on **{machine_line()}**; dtype `{ranker.config.dtype}`, first DL19 query "
        f"over {args.n} BM25 passages ({layout.num_tokens} tokens); inductor, `dynamic=False`, chunk functions of "
        f"`TOKEN_CHUNK = {forward.TOKEN_CHUNK}` rows. Median of {args.repeats} calls each, alternating. Load "
        f"average before the run: {load_before:.1f} on {os.cpu_count()} cores.",
        "",
        "| eager s | compiled s | speed-up | first compiled call s (compiling) | max abs score difference |",
        "|---|---|---|---|---|",
        f"| {eager:.2f} | {compiled:.2f} | {eager / compiled:.2f}x | {first:.1f} | {difference:.1e} |",
    ]
    write_section("compile-layer", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()

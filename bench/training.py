"""Training throughput: prompts per second of `blockrank train`'s step, by option, measured side by side in one run.

One prompt is the issue-17 shape: 30 candidates of up to 160 tokens (real SciFact train claims, BM25 negatives),
LoRA rank 16 on layers 0..L* of the embedded SmolLM2-135M, as the shipped adapter was trained. Each variant runs
the same prompts through `Trainer.train_step` (forward, backward, optimizer step); the first step is a warm-up.
Variants: the full objective (next-token + InfoNCE) with and without gradient checkpointing, the scoring-only
objective (`next_token_weight=0`: layers 0..L*-1, no LM head), and bf16 autocast where the CPU has AMX-BF16
(on a CPU without it bf16 is emulated and slower: measured only with --bf16). GPU rows come from a lent GPU run.
Usage: python bench/training.py [--steps 3] [--bf16]; writes the `training` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import machine_line, write_section  # noqa: E402

from blockrank_rerank.loading import EMBEDDED_BASE, load_model_and_tokenizer  # noqa: E402
from blockrank_rerank.training import TrainConfig, Trainer, load_examples  # noqa: E402


def has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware tiles (AMX), the case where CPU bf16 training can pay."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def cpu_name() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return "unknown CPU"


def measure(name: str, config: TrainConfig, examples: list, steps: int) -> dict:
    """Seconds per prompt of `steps` timed optimizer steps after one warm-up step (a freshly loaded model)."""
    trainer = Trainer(config, examples=examples)
    prompts = trainer.prompt_stream()
    trainer.train_step(prompts)  # warm-up: allocator, first-call paths
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step(prompts)
        times.append((time.perf_counter() - start) / config.prompts_per_step)
    return {"variant": name, "seconds_per_prompt": statistics.median(times), "runs": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per variant (one prompt each)")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast on a CPU without AMX-BF16")
    args = parser.parse_args()
    examples = load_examples(["scifact-train-fit"])[:64]
    load_model_and_tokenizer(EMBEDDED_BASE, torch.float32, "cpu")  # converts the embedded model once, untimed
    base = dict(
        model=EMBEDDED_BASE,
        num_candidates=30,
        max_block_tokens=160,
        lora_rank=16,
        lora_alpha=32,
        prompts_per_step=1,
        max_steps=args.steps + 1,
        warmup_steps=0,
        resume=False,
        save_every=100000,
    )
    variants = {
        "full objective, gradient checkpointing (the default)": {},
        "full objective, no gradient checkpointing": {"gradient_checkpointing": False},
        "scoring only (next_token_weight=0), checkpointing": {"next_token_weight": 0.0, "aux_weight": 1.0},
        "scoring only, no checkpointing": {
            "next_token_weight": 0.0,
            "aux_weight": 1.0,
            "gradient_checkpointing": False,
        },
    }
    if has_amx_bf16() or args.bf16:
        variants["scoring only, no checkpointing, bf16 autocast"] = {
            "next_token_weight": 0.0,
            "aux_weight": 1.0,
            "gradient_checkpointing": False,
            "dtype": "bfloat16",
        }
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, changes in variants.items():
            config = TrainConfig(**{**base, **changes, "output_dir": str(Path(scratch) / str(len(rows)))})
            row = measure(name, config, examples, args.steps)
            rows.append(row)
            print(f"{name}: {row['seconds_per_prompt']:.2f} s/prompt", flush=True)
    reference = rows[0]["seconds_per_prompt"]
    amx = "with AMX-BF16" if has_amx_bf16() else "without AMX-BF16"
    body = [
        "## Training throughput (`bench/training.py`)",
        "",
        f"{cpu_name()} ({amx}); {machine_line()}. One prompt: 30 SciFact train candidates of up to 160 tokens, "
        "LoRA rank 16 on layers 0..L* of SmolLM2-135M, one prompt per optimizer step; median of "
        f"{args.steps} timed steps after a warm-up, every variant on the same prompts in one run.",
        "",
        "| variant | s/prompt | prompts/s | vs the default |",
        "|---|---|---|---|",
        *[
            f"| {r['variant']} | {r['seconds_per_prompt']:.2f} | {1 / r['seconds_per_prompt']:.3f} | "
            f"{reference / r['seconds_per_prompt']:.2f}x |"
            for r in rows
        ],
        "",
        "Issue 17's targets for this shape on 2 cores: <= 8 s/prompt in fp32, <= 4 s with AMX-BF16. "
        "The lent-GPU rate (H200, mixed 30..100 candidates) is in docs/training.md.",
    ]
    write_section("training", "\n".join(body))
    print("wrote the training section of docs/benchmarks.md")


if __name__ == "__main__":
    main()

"""Training throughput: prompts per second of `blockrank train`'s step, by option, measured side by side in one run.

One prompt is the issue-17 shape: 30 candidates of up to 160 tokens (real SciFact train claims, BM25 negatives),
LoRA rank 16 on layers 0..L* of the embedded SmolLM2-135M, as the shipped adapter was trained. Each variant runs
the same prompts through `Trainer.train_step` (forward, backward, optimizer step); the first step is a warm-up.
Variants: the full objective (next-token + InfoNCE) with and without gradient checkpointing, the scoring-only
objective (`next_token_weight=0`: layers 0..L*-1, no LM head), and bf16 autocast where the CPU multiplies bf16
natively (AMX-BF16 or AVX512-BF16 in /proc/cpuinfo; elsewhere with --bf16). On a GPU: the packed and the dense
forward at 30 and 100 candidates.
Usage: python bench/training.py [--steps 3] [--bf16] [--device cuda --candidates 30 100 --profile FILE]; writes the
`training-cpu` (or `training-cuda`) section of docs/benchmarks.md.
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


def cpu_flags() -> set[str]:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
        return set(line.split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware tiles (AMX), where issue 17 sets its bf16 target."""
    return "amx_bf16" in cpu_flags()


def has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AMX or AVX512-BF16), the case where bf16 training pays."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


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


def variants_for(device: str, bf16: bool) -> dict[str, dict]:
    """The configurations compared: on a CPU the objective and checkpointing options, on a GPU also the forwards."""
    scoring_only = {"next_token_weight": 0.0, "aux_weight": 1.0}
    if device == "cpu":
        variants = {
            "full objective, gradient checkpointing (the default)": {},
            "full objective, no gradient checkpointing": {"gradient_checkpointing": False},
            "scoring only (next_token_weight=0), checkpointing": scoring_only,
            "scoring only, no checkpointing": {**scoring_only, "gradient_checkpointing": False},
        }
        if bf16:
            variants["scoring only, no checkpointing, bf16 autocast"] = {
                **scoring_only,
                "gradient_checkpointing": False,
                "dtype": "bfloat16",
            }
        return variants
    gpu = {"dtype": "bfloat16", "prompts_per_step": 4}
    return {
        "packed, full objective, checkpointing, bf16 (the lent-GPU run's setting)": gpu,
        "packed, scoring only, no checkpointing, bf16": {**gpu, **scoring_only, "gradient_checkpointing": False},
        "dense (4 prompts per forward), full objective, bf16": {**gpu, "forward": "dense"},
    }


def profile_step(config: TrainConfig, examples: list, path: Path) -> None:
    """The operators that take one optimizer step's time, written to `path` (where the time goes, not a figure)."""
    trainer = Trainer(config, examples=examples)
    prompts = trainer.prompt_stream()
    trainer.train_step(prompts)
    activities = [torch.profiler.ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"
    with torch.profiler.profile(activities=activities) as profiler:
        trainer.train_step(prompts)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    path.write_text(profiler.key_averages().table(sort_by=sort, row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per variant after a warm-up")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--candidates", type=int, nargs="+", default=[30], help="candidates per prompt, each timed")
    parser.add_argument(
        "--bf16", action="store_true", help="also time bf16 autocast on a CPU without bf16 instructions"
    )
    parser.add_argument("--profile", default=None, help="write an operator profile of one packed step to this file")
    args = parser.parse_args()
    device = torch.device(args.device).type
    examples = load_examples(["scifact-train-fit"])[:64]
    load_model_and_tokenizer(EMBEDDED_BASE, torch.float32, "cpu")  # converts the embedded model once, untimed
    base = dict(
        model=EMBEDDED_BASE,
        max_block_tokens=160,
        lora_rank=16,
        lora_alpha=32,
        prompts_per_step=1,
        max_steps=args.steps + 2,
        warmup_steps=0,
        resume=False,
        save_every=100000,
        device=args.device,
    )
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        for candidates in args.candidates:
            for name, changes in variants_for(device, has_native_bf16() or args.bf16).items():
                fields = {**base, "num_candidates": candidates, **changes}
                config = TrainConfig(**fields, output_dir=str(Path(scratch) / str(len(rows))))
                row = measure(name, config, examples, args.steps)
                rows.append({**row, "candidates": candidates})
                print(f"{candidates} candidates, {name}: {row['seconds_per_prompt']:.3f} s/prompt", flush=True)
                write_report(rows, device, args)  # after every row: a run cut short still leaves what it measured
        if args.profile:
            first = next(iter(variants_for(device, False).values()))
            config = TrainConfig(
                **{**base, **first}, num_candidates=args.candidates[-1], output_dir=str(Path(scratch) / "profile")
            )
            profile_step(config, examples, Path(args.profile))
    print(f"wrote the training-{device} section of docs/benchmarks.md")


def write_report(rows: list[dict], device: str, args: argparse.Namespace) -> None:
    """The `training-<device>` section of docs/benchmarks.md from the rows measured so far."""
    if device == "cuda":
        where = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    else:
        flags = ", ".join(sorted({"amx_bf16", "avx512_bf16"} & cpu_flags())) or "no bf16 instructions"
        where = f"{cpu_name()} ({flags}); {machine_line()}"
    body = [
        f"## Training throughput on {device.upper()} (`bench/training.py --device {args.device}`)",
        "",
        f"{where}. One prompt: SciFact train candidates of up to 160 tokens, LoRA rank 16 on layers 0..L* of "
        f"SmolLM2-135M; median of {args.steps} timed optimizer steps after a warm-up, every variant on the same "
        "prompts in one run.",
        "",
        "| candidates | variant | s/prompt | prompts/s | vs the first variant |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        reference = next(r for r in rows if r["candidates"] == row["candidates"])["seconds_per_prompt"]
        body.append(
            f"| {row['candidates']} | {row['variant']} | {row['seconds_per_prompt']:.3f} | "
            f"{1 / row['seconds_per_prompt']:.2f} | {reference / row['seconds_per_prompt']:.2f}x |"
        )
    body += ["", "Issue 17's targets for 30 candidates on 2 CPU cores: <= 8 s/prompt in fp32, <= 4 s with AMX-BF16."]
    write_section(f"training-{device}", "\n".join(body))


if __name__ == "__main__":
    main()

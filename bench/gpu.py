"""GPU check: are repeated calls bit-identical, how far is chunked from one shot, and what peak GPU memory at N documents.

Runs on CUDA only. `--random-weights DIR` builds the model from a config and tokenizer in DIR with random
weights (for machines without the embedded model; memory and determinism do not depend on the weights).
Documents come from a JSON list (`--documents`, e.g. written by `python bench/gpu.py --dump-documents FILE`
on a machine with the DL19 data). Prints, and writes to `--output`, the body of the "gpu" section of
docs/benchmarks.md. Usage:
    python bench/gpu.py --dump-documents runs/gpu/docs.json          # where the data is
    python bench/gpu.py --documents runs/gpu/docs.json --random-weights runs/gpu --output runs/gpu/section.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPEATS = 5


def load(args: argparse.Namespace, dtype: str):
    from blockrank_rerank import BlockRank, BlockRankConfig

    config = BlockRankConfig(device="cuda", dtype=dtype, max_block_tokens=args.block)
    if args.random_weights is None:
        return BlockRank.from_pretrained(args.model, config=config), "embedded default" if args.model is None else args.model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.random_weights), dtype=config.torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.random_weights)
    return BlockRank(model.to("cuda").eval(), tokenizer, config), f"random weights, config of {Path(args.random_weights).name}"


def repeat_scores(ranker, layout) -> list[torch.Tensor]:
    return [ranker.score_layout(layout) for _ in range(REPEATS)]


def spread(runs: list[torch.Tensor]) -> str:
    """'bit-identical' or the largest difference between repeats."""
    worst = max(float((r - runs[0]).abs().max()) for r in runs)
    return "bit-identical" if all(torch.equal(r, runs[0]) for r in runs) else f"differ by up to {worst:.1e}"


def peak_call(ranker, layout) -> tuple[torch.Tensor, float, float]:
    """Scores, seconds and peak GPU memory (MB above what was allocated before) of one call."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    scores = ranker.score_layout(layout)
    torch.cuda.synchronize()
    return scores, time.perf_counter() - start, (torch.cuda.max_memory_allocated() - before) / 2**20


def measure(args: argparse.Namespace, documents: list[str], query: str) -> str:
    lines = [
        "## GPU: determinism, chunked vs one shot, peak GPU memory",
        "",
        f"`python bench/gpu.py` on {torch.cuda.get_device_name()}, torch {torch.version.cuda and torch.__version__} (CUDA {torch.version.cuda}).",
    ]
    rows = ["| dtype | backend | repeats, N = 100 (one shot) | repeats, N = 100 (chunked) | same with deterministic algorithms | "
            f"chunked vs one shot, N = {args.n} | one shot: peak MB, s | chunked ({args.budget:g} MB budget): peak MB, s |",
            "|---|---|---|---|---|---|---|---|"]
    for dtype in ("float32", "bfloat16"):
        ranker, name = load(args, dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # documents are cut to the block size on purpose
            small, large = ranker.layout(query, documents[:100]), ranker.layout(query, documents[: args.n])
        one_shot = type(ranker)(ranker.model, ranker.tokenizer, ranker.config.replace(memory_budget_mb=None), name=name)
        chunked = type(ranker)(ranker.model, ranker.tokenizer, ranker.config.replace(memory_budget_mb=1.0), name=name)
        bounded = type(ranker)(ranker.model, ranker.tokenizer, ranker.config.replace(memory_budget_mb=args.budget), name=name)
        one_shot.score_layout(small)  # warm-up: kernels compiled and autotuned
        chunked.score_layout(small)
        plain, split = spread(repeat_scores(one_shot, small)), spread(repeat_scores(chunked, small))
        torch.use_deterministic_algorithms(True, warn_only=True)
        strict = f"{spread(repeat_scores(one_shot, small))} / {spread(repeat_scores(chunked, small))}"
        torch.use_deterministic_algorithms(False)
        whole, whole_s, whole_mb = peak_call(one_shot, large)
        part, part_s, part_mb = peak_call(bounded, large)
        plan = bounded.execution_plan(large)
        rows.append(
            f"| {dtype} | {one_shot.backend} | {plain} | {split} | {strict} | {float((whole - part).abs().max()):.1e} | "
            f"{whole_mb:.0f}, {whole_s:.2f} | {part_mb:.0f}, {part_s:.2f} ({'chunks of ' + str(plan.chunk_tokens) if plan.chunked else 'one shot'}) |"
        )
        del ranker, one_shot, chunked, bounded
        torch.cuda.empty_cache()
    lines += [
        f"Model: {name}; {args.n} documents of {args.block} tokens ({large.num_tokens} tokens in all). \"Repeats\": {REPEATS} calls",
        "on one layout compared bit for bit; the chunked column uses a 1 MB budget (one document per chunk). Deterministic",
        "algorithms: `torch.use_deterministic_algorithms(True)` around the same repeats. Peak MB: `torch.cuda.max_memory_allocated`",
        "during one call above what was allocated before it (weights excluded).",
        "",
        *rows,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", help="JSON file: {'query': str, 'documents': [str, ...]}")
    parser.add_argument("--dump-documents", help="write the DL19-based documents of bench/memory.py to this JSON file and exit")
    parser.add_argument("--model", default=None)
    parser.add_argument("--random-weights", default=None, help="directory with config.json and tokenizer files")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--block", type=int, default=160)
    parser.add_argument("--budget", type=float, default=2048, help="memory_budget_mb of the bounded chunked call")
    parser.add_argument("--output", default=None, help="also write the section body to this file")
    args = parser.parse_args()
    if args.dump_documents:
        from memory import documents

        query, docs = documents(args.n)
        Path(args.dump_documents).write_text(json.dumps({"query": query, "documents": docs}))
        return
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device")
    data = json.loads(Path(args.documents).read_text())
    text = measure(args, data["documents"], data["query"])
    if args.output:
        Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

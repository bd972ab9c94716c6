"""End-to-end reranking latency on one accelerator, per attention backend, model geometry and list size N.

One call is `Engine.score_layout` on a packed prompt: attention planning (host), layers 0..L*, the readout
and the copy of the scores back to the host; tokenising is left out (it is the same on any device).
Geometries, randomly initialised (latency does not depend on the weights' values):
  smollm2-135m  the default model's shapes (30 layers, 576 wide, 9 query / 3 KV heads), L* = 19
  mistral-7b    Mistral-7B's shapes (32 layers, 4096 wide, 32 / 8 heads), L* = 20, bf16 weights
Each prompt: a 60-token prefix, N documents of 100 tokens (DL19's passages average ~100), a 40-token query
block. The first call (compilation, autotuning, allocator warm-up) is reported apart from the median of the
rest. A profile of one smollm2-135m N=100 call says where the time goes (host or device). Multi-query packing:
PACK_QUERIES prompts of the default geometry scored one forward each against one packed forward (queries/s).
Usage: python bench/gpu_latency.py --json OUT.json [--profile OUT.txt]   (on the GPU machine)
       python bench/gpu_latency.py --report OUT.json                      (writes docs/benchmarks.md)
       python bench/gpu_latency.py --smoke                                (tiny shapes on CPU, writes nothing)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from blockrank_rerank import BlockRank, BlockRankConfig  # noqa: E402
from blockrank_rerank.layout import BlockLayout, build_layout  # noqa: E402
from blockrank_rerank.tokenize import TokenizedPrompt  # noqa: E402

PREFIX_TOKENS, DOCUMENT_TOKENS, QUERY_TOKENS = 60, 100, 40
GEOMETRY_FIELDS = (
    "family",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "rope_theta",
    "scoring_layer",
)
GEOMETRIES: dict[str, dict[str, Any]] = {
    name: dict(zip(GEOMETRY_FIELDS, row))
    for name, row in {
        "smollm2-135m": ("llama", 576, 1536, 30, 9, 3, 49152, 100000.0, 19),
        "mistral-7b": ("mistral", 4096, 14336, 32, 32, 8, 32768, 1000000.0, 20),
        "tiny": ("llama", 64, 128, 4, 4, 2, 256, 10000.0, 2),  # --smoke only
    }.items()
}


def random_model(geometry: str, dtype: torch.dtype, device: str) -> tuple[Any, int]:
    """A randomly initialised causal LM of `geometry`, made directly on `device` in `dtype`, and its L*."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    shape = dict(GEOMETRIES[geometry])
    family, scoring_layer = shape.pop("family"), shape.pop("scoring_layer")
    config_class, model_class = (
        (LlamaConfig, LlamaForCausalLM) if family == "llama" else (MistralConfig, MistralForCausalLM)
    )
    config = config_class(**shape, max_position_embeddings=32768, tie_word_embeddings=False)
    with torch.device(device):
        model = model_class(config).to(dtype)
    return model.eval(), scoring_layer


def synthetic_layout(num_documents: int, vocab: int, seed: int = 0) -> BlockLayout:
    """A packed prompt of random token ids with the block sizes above."""
    g = torch.Generator().manual_seed(seed)

    def ids(count: int) -> list[int]:
        return torch.randint(3, vocab, (count,), generator=g).tolist()

    prompt = TokenizedPrompt(
        prefix=ids(PREFIX_TOKENS),
        documents=[ids(DOCUMENT_TOKENS) for _ in range(num_documents)],
        query_block=ids(QUERY_TOKENS),
        query="q",
        truncated_documents=(),
    )
    return build_layout(prompt, query_position_offset=16384)


def time_calls(ranker: BlockRank, layout: BlockLayout, repeats: int) -> dict[str, float]:
    """Seconds of the first call and the median of `repeats` more (each ends with the scores on the host)."""
    engine = ranker.engine
    sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats + 1):
        sync()
        start = time.perf_counter()
        engine.score_layout(layout)
        sync()
        times.append(time.perf_counter() - start)
    return {"first_s": times[0], "median_s": statistics.median(times[1:])}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = "cpu" if args.smoke else args.device
    cells = []
    runs = (
        [("tiny", "float32", "torch"), ("tiny", "float32", "flex"), ("tiny", "bfloat16-mixed", "torch")]
        if args.smoke
        else [
            ("smollm2-135m", dtype, backend)
            for dtype in ("bfloat16-mixed", "float32")
            for backend in ("triton", "torch", "flex")
        ]
        + [("mistral-7b", "bfloat16", backend) for backend in ("triton", "torch", "flex")]
    )
    if args.only:
        runs = [run for run in runs if ":".join(run) in args.only]
    models: dict[tuple[str, str], tuple[Any, int]] = {}
    for geometry, dtype, backend in runs:
        weights = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        if (geometry, dtype) not in models:
            models.clear()  # one model on the device at a time
            if device == "cuda":
                torch.cuda.empty_cache()
            models[(geometry, dtype)] = random_model(geometry, weights, device)
        model, scoring_layer = models[(geometry, dtype)]
        config = BlockRankConfig(
            device=device,
            dtype=dtype,
            attention_backend=backend,
            scoring_layer=scoring_layer,
            query_position_offset=16384,
            max_block_tokens=DOCUMENT_TOKENS,
            memory_budget_mb=None,  # one shot: the chunked path is for small memories
        )
        ranker = BlockRank(model, None, config, name=geometry)
        for n in args.n:
            layout = synthetic_layout(n, GEOMETRIES[geometry]["vocab_size"])
            cell = {"geometry": geometry, "dtype": dtype, "backend": backend, "n": n, "tokens": layout.num_tokens}
            try:
                cell.update(time_calls(ranker, layout, args.repeats))
            except Exception as error:  # noqa: BLE001 - a backend that fails is reported, the others still run
                cell["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            print(json.dumps(cell), flush=True)
            cells.append(cell)
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cells": cells,
    }


PACK_QUERIES = 8


def measure_packing(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Queries/s of PACK_QUERIES prompts, one forward each against one packed forward, per backend and N."""
    device = "cpu" if args.smoke else args.device
    geometry = "tiny" if args.smoke else "smollm2-135m"
    model, scoring_layer = random_model(geometry, torch.float32, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    cells = []
    for backend in ("torch",) if args.smoke else ("triton", "torch"):
        config = BlockRankConfig(
            device=device,
            dtype="float32" if args.smoke else "bfloat16-mixed",
            attention_backend=backend,
            scoring_layer=scoring_layer,
            query_position_offset=16384,
            max_block_tokens=DOCUMENT_TOKENS,
            memory_budget_mb=None,
            max_pack_tokens=1 << 30,
        )
        engine = BlockRank(model, None, config, name=geometry).engine
        for n in args.n[:2]:
            layouts = [synthetic_layout(n, GEOMETRIES[geometry]["vocab_size"], seed) for seed in range(PACK_QUERIES)]
            cell = {"geometry": geometry, "backend": backend, "dtype": config.dtype, "n": n, "queries": PACK_QUERIES}
            for name, call in (
                ("one_per_forward_s", lambda: [engine.read_layout(layout) for layout in layouts]),
                ("packed_s", lambda: engine.read_layouts(layouts)),
            ):
                times = []
                for _ in range(args.repeats + 1):
                    sync()
                    start = time.perf_counter()
                    call()
                    sync()
                    times.append(time.perf_counter() - start)
                cell[name] = statistics.median(times[1:])
            print(json.dumps(cell), flush=True)
            cells.append(cell)
    return cells


def packing_report(cells: list[dict[str, Any]]) -> str:
    """Rows of the packing table: queries/s one forward per query against one packed forward."""
    lines = [
        f"Multi-query packing ({PACK_QUERIES} prompts of the {cells[0]['geometry'] if cells else ''} geometry, "
        "`Engine.read_layouts`; median "
        "seconds for all of them, queries/s in brackets):",
        "",
        "| backend | dtype | N | one forward per query | one packed forward | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        one, packed = c["one_per_forward_s"], c["packed_s"]
        lines.append(
            f"| {c['backend']} | {c['dtype']} | {c['n']} | {one:.3f} s ({c['queries'] / one:.1f}) | "
            f"{packed:.3f} s ({c['queries'] / packed:.1f}) | {one / packed:.2f}x |"
        )
    return "\n".join(lines)


def profile(args: argparse.Namespace, path: Path) -> None:
    """Operator profile of one smollm2-135m N=100 call (after warm-up), host and device time per operator."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device = "cpu" if args.smoke else args.device
    geometry = "tiny" if args.smoke else "smollm2-135m"
    model, scoring_layer = random_model(geometry, torch.float32, device)
    config = BlockRankConfig(
        device=device, attention_backend="torch", scoring_layer=scoring_layer, query_position_offset=16384
    )
    ranker = BlockRank(model, None, config, name=geometry)
    layout = synthetic_layout(100, GEOMETRIES[geometry]["vocab_size"])
    time_calls(ranker, layout, 2)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        ranker.engine.score_layout(layout)
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    text = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    text += "\n\n" + prof.key_averages().table(sort_by=sort, row_limit=15)
    path.write_text(f"{geometry}, N=100, dtype {config.dtype}, backend torch, {layout.num_tokens} tokens\n\n{text}\n")
    print(text[:3000])


def report(results: dict[str, Any]) -> str:
    """The docs/benchmarks.md section: one row per (geometry, dtype, N), one column per backend."""
    cells = results["cells"]
    backends = list(dict.fromkeys(c["backend"] for c in cells))
    lines = [
        f"Measured by `bench/gpu_latency.py` on **{results['device']}** (torch {results['torch']}), one call at a "
        "time: attention planning, layers 0..L*, readout, scores back on the host (tokenising excluded). "
        f"Randomly initialised models of the named geometry; prompts of a {PREFIX_TOKENS}-token prefix, N documents "
        f"of {DOCUMENT_TOKENS} tokens and a {QUERY_TOKENS}-token query block. Median of the calls after the first, "
        "in ms; the first call (compilation, autotuning) in brackets.",
        "",
        "| geometry | dtype | N | tokens | " + " | ".join(backends) + " |",
        "|---|---|---|---|" + "---|" * len(backends),
    ]
    rows: dict[tuple, dict[str, dict]] = {}
    for c in cells:
        rows.setdefault((c["geometry"], c["dtype"], c["n"], c["tokens"]), {})[c["backend"]] = c
    for (geometry, dtype, n, tokens), by_backend in rows.items():
        values = []
        for backend in backends:
            c = by_backend.get(backend)
            if c is None:
                values.append("")
            elif "error" in c:
                values.append(f"failed: {c['error'][:80]}")
            else:
                values.append(f"{1000 * c['median_s']:.1f} ({1000 * c['first_s']:.0f})")
        lines.append(f"| {geometry} | {dtype} | {n} | {tokens} | " + " | ".join(values) + " |")
    if results.get("notes"):
        lines += ["", f"Note: {results['notes']}."]
    return "\n".join(lines)


def profile_summary(path: Path) -> str:
    """Host and device time of the profiled call, its kernel launches and host syncs, read from the profile table."""
    text = path.read_text()
    host = re.search(r"Self CPU time total: ([\d.]+)ms", text)
    device = re.search(r"Self CUDA time total: ([\d.]+)ms", text)
    launches = re.search(r"^\s*cudaLaunchKernel\s.*?(\d+)\s*$", text, re.M)
    syncs = re.search(r"^\s*aten::nonzero\s.*?(\d+)\s*$", text, re.M)
    if not (host and device):
        return ""
    return (
        f"Profile of one call ({text.splitlines()[0]}; `{path.name}` beside the JSON): "
        f"{host.group(1)} ms of host time against {device.group(1)} ms of device time"
        + (f", {launches.group(1)} kernel launches" if launches else "")
        + (f", {syncs.group(1)} `nonzero` calls (each a host sync)" if syncs else ", no `nonzero` calls")
        + (
            ": at this size the call is bound by the host, not the GPU."
            if float(host.group(1)) > float(device.group(1))
            else "."
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, nargs="+", default=[20, 100, 500])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument(
        "--profile", type=Path, help="write an operator profile of one N=100 call here (with --report: read it)"
    )
    parser.add_argument("--report", type=Path, help="write docs/benchmarks.md's section from this JSON")
    parser.add_argument("--only", nargs="+", default=None, help="run only these geometry:dtype:backend cells")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU to check the script")
    args = parser.parse_args()
    if args.report:
        results = json.loads(args.report.read_text())
        body = "## End-to-end latency on a GPU\n\n" + report(results)
        if results.get("packing"):
            body += "\n\n" + packing_report(results["packing"])
        if args.profile and args.profile.exists():
            body += "\n\n" + profile_summary(args.profile)
        write_section(f"latency-{results['device'].lower().replace(' ', '-')}", body)
        return
    if args.smoke:
        args.n, args.repeats = [3, 6], 1
    if args.profile:
        profile(args, args.profile)
    results = measure(args)
    results["packing"] = measure_packing(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(packing_report(results["packing"]))


if __name__ == "__main__":
    main()

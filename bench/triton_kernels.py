"""The fused Triton block-sparse attention kernel against PyTorch baselines on one CUDA GPU.

One BlockRank stream per N: a prefix of `--prefix-tokens`, N documents of `--doc-tokens`, a query block of
`--query-tokens`; Mistral-7B head geometry (32 query heads, 8 KV heads, head dim 128), bf16, one layer.
Methods, each on the same q/k/v:
  triton      blockrank_rerank.kernels.block_attention (masked tiles skipped)
  torch       the library's per-block SDPA backend (blockrank_rerank.attention.torch_attention)
  sdpa-dense  F.scaled_dot_product_attention with the dense (T, T) boolean mask (built on the GPU, not timed)
  flex        torch.compile(flex_attention) with a BlockMask built from the same rule (mask build timed apart)
and the layer-L* score readout: the fused kernel against signal_attention + document_scores.
tokens/s is T over the median time; TFLOP/s counts only the useful work, 4 * D * H per allowed (query, key)
pair, the same for every method. Writes the "kernels" section of docs/benchmarks.md, naming the device.
Usage: python bench/triton_kernels.py [--n 100 500]; `--smoke` runs tiny shapes on CPU through the Triton
interpreter to check the script itself (prints, writes nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

if "--smoke" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from blockrank_rerank.attention import plan_attention, torch_attention  # noqa: E402
from blockrank_rerank.kernels.block_attention import block_attention  # noqa: E402
from blockrank_rerank.kernels.score_readout import fused_document_scores  # noqa: E402
from blockrank_rerank.layout import BlockLayout, attends, build_layout  # noqa: E402
from blockrank_rerank.scoring import document_scores, signal_attention  # noqa: E402
from blockrank_rerank.tokenize import TokenizedPrompt  # noqa: E402


def synthetic_layout(num_documents: int, prefix: int, doc_tokens: int, query: int) -> BlockLayout:
    """A packed stream with the given block sizes (token ids do not matter to attention)."""
    prompt = TokenizedPrompt(
        prefix=[1] * prefix,
        documents=[[1] * doc_tokens] * num_documents,
        query_block=[1] * query,
        query="q",
        truncated_documents=(),
    )
    return build_layout(prompt, query_position_offset=16384)


def allowed_pairs(row_start: torch.Tensor, context_end: torch.Tensor) -> int:
    """Number of allowed (query, key) pairs under `attends` (counted per row, no (T, T) mask). Shapes: (T,), (T,)."""
    rows = torch.arange(row_start.shape[0], dtype=torch.int64)
    starts, contexts = row_start.cpu().to(torch.int64), context_end.cpu().to(torch.int64)
    shared = torch.minimum(contexts, rows + 1)  # keys j < context_end, j <= i
    own = (rows - torch.maximum(starts, contexts) + 1).clamp(min=0)  # keys max(start, context_end) <= j <= i
    return int((shared + own).sum())


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of `fn` after one warm-up call (CUDA events on GPU, wall clock otherwise)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def dense_sdpa_fn(q, k, v, layout: BlockLayout, scale, device) -> tuple[Callable[[], torch.Tensor], Optional[str]]:
    """SDPA with the dense (T, T) boolean mask of the same rule, built on the device (not timed)."""
    allowed = layout.allowed_on(device)  # (T, T) bool
    return lambda: F.scaled_dot_product_attention(
        q[None], k[None], v[None], attn_mask=allowed, scale=scale, enable_gqa=True
    )[0], None


def flex_attention_fn(
    q, k, v, row_start, context_end, scale, device, dense_max_tokens: int
) -> tuple[Callable[[], torch.Tensor], Optional[str]]:
    """FlexAttention over the same rule (`attends`): the callable, and a note of the seconds its BlockMask took
    to build."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_idx, kv_idx):
        return attends(q_idx, kv_idx, row_start[q_idx], context_end[q_idx])

    tokens = q.shape[1]
    began = time.perf_counter()
    # Eager construction evaluates the (T, T) mask; above the dense cap the compiled builder avoids it
    # (slow to compile).
    block_mask = create_block_mask(
        mask_mod, None, None, tokens, tokens, device=device, _compile=tokens > dense_max_tokens
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    build = time.perf_counter() - began
    compiled = torch.compile(flex_attention)
    fn = lambda: compiled(q[None], k[None], v[None], block_mask=block_mask, scale=scale, enable_gqa=True)[0]  # noqa: E731
    return fn, f"flex BlockMask build {build:.3f} s (not in its time; the first call also compiles)"


def failure_note(name: str, error: Exception) -> str:
    """One line for the report on a method that could not run."""
    first_line = str(error).splitlines()[0][:200] if str(error) else ""
    return f"{name} failed: {type(error).__name__}: {first_line}"


def measure(n: int, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    """Times and errors of every method for N documents, printed as each one finishes.

    Baselines are built one at a time, cheapest first, so a slow one (a FlexAttention compile, a dense mask)
    cannot hold back the figures of the others; a baseline that fails is reported in the notes.
    """
    layout = synthetic_layout(n, args.prefix_tokens, args.doc_tokens, args.query_tokens)
    tokens, heads, kv_heads, head_dim = layout.num_tokens, args.heads, args.kv_heads, args.head_dim
    g = torch.Generator().manual_seed(n)
    q = torch.randn(heads, tokens, head_dim, generator=g).to(device, dtype)  # (H, T, D)
    k = torch.randn(kv_heads, tokens, head_dim, generator=g).to(device, dtype)  # (Hkv, T, D)
    v = torch.randn(kv_heads, tokens, head_dim, generator=g).to(device, dtype)  # (Hkv, T, D)
    scale = head_dim**-0.5
    row_start, context_end = layout.kernel_arguments(device)
    plan = plan_attention(layout, 8192, device)
    flops = 4 * head_dim * heads * allowed_pairs(row_start, context_end)
    result = {"n": n, "tokens": tokens, "flops": flops, "seconds": {}, "error": {}, "notes": []}

    reference = torch_attention(q, k, v, plan, scale).float()
    builders: dict[str, Callable[[], tuple[Callable[[], torch.Tensor], Optional[str]]]] = {
        "triton": lambda: (lambda: block_attention(q, k, v, row_start, context_end, scale), None),
        "torch": lambda: (lambda: torch_attention(q, k, v, plan, scale), None),
    }
    if not args.skip_dense and tokens > args.dense_max_tokens:
        result["notes"].append(f"sdpa-dense skipped: {tokens} tokens > --dense-max-tokens {args.dense_max_tokens}")
    elif not args.skip_dense:
        builders["sdpa-dense"] = lambda: dense_sdpa_fn(q, k, v, layout, scale, device)
    if not args.skip_flex:
        builders["flex"] = lambda: flex_attention_fn(
            q, k, v, row_start, context_end, scale, device, args.dense_max_tokens
        )
    for name, build in builders.items():
        began = time.perf_counter()
        try:
            fn, note = build()
            if note:
                result["notes"].append(note)
            result["error"][name] = float((fn().float() - reference).abs().max())
            result["seconds"][name] = timed(fn, device, args.repeats)
            print(
                f"N = {n} {name}: {1e3 * result['seconds'][name]:.3f} ms "
                f"(setup and runs {time.perf_counter() - began:.1f} s)",
                flush=True,
            )
        except Exception as error:  # noqa: BLE001 - a method that cannot run is reported, not fatal
            result["notes"].append(failure_note(name, error))
            print(f"N = {n} {name}: failed ({type(error).__name__})", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        fn = None  # frees a dense mask before the next method

    rows, owner = layout.document_rows()
    signal = torch.arange(tokens - args.signal_tokens, tokens)
    q_signal = q[:, signal].contiguous()  # (H, S, D)
    k_docs = k[:, rows.to(device)].contiguous()  # (Hkv, Dtok, D)
    owner = owner.to(device)
    expected = document_scores(signal_attention(q_signal, k_docs, scale), owner, n)
    readout = {
        "fused readout": lambda: fused_document_scores(q_signal, k_docs, owner, n, scale),
        "torch readout": lambda: document_scores(signal_attention(q_signal, k_docs, scale), owner, n),
    }
    for name, fn in readout.items():
        try:
            result["error"][name] = float((fn() - expected).abs().max())
            result["seconds"][name] = timed(fn, device, args.repeats)
            print(f"N = {n} {name}: {1e3 * result['seconds'][name]:.3f} ms", flush=True)
        except Exception as error:  # noqa: BLE001 - reported like the attention methods
            result["notes"].append(failure_note(name, error))
    return result


def report(results: list[dict], args: argparse.Namespace, device_name: str) -> str:
    import triton

    lines = [
        "## Fused Triton kernels (GPU)",
        "",
        (
            f"`python bench/triton_kernels.py` on {device_name}, torch {torch.__version__}, "
            f"triton {triton.__version__}; one attention"
        ),
        (
            f"layer in {args.dtype} with Mistral-7B head geometry ({args.heads} heads, {args.kv_heads} KV heads, "
            f"D = {args.head_dim}),"
        ),
        (
            f"prefix {args.prefix_tokens} tokens, N documents of {args.doc_tokens} tokens, "
            f"query block {args.query_tokens} tokens."
        ),
        (
            f"Median of {args.repeats} runs after a warm-up. "
            "TFLOP/s counts only the allowed (query, key) pairs, the same work for"
        ),
        "every method; the error column is the max |difference| from the library's per-block SDPA path.",
        "",
        "| N | tokens | method | ms | tokens/s | TFLOP/s | max error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, seconds in r["seconds"].items():
            tflops = f"{r['flops'] / seconds / 1e12:.1f}" if "readout" not in name else "-"
            lines.append(
                f"| {r['n']} | {r['tokens']} | {name} | {1e3 * seconds:.3f} | {r['tokens'] / seconds:,.0f} | "
                f"{tflops} | {r['error'][name]:.1e} |"
            )
    notes = [f"N = {r['n']}: {note}" for r in results for note in r["notes"]]
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100, 500], help="numbers of documents")
    parser.add_argument("--doc-tokens", type=int, default=160)
    parser.add_argument("--prefix-tokens", type=int, default=96, help="benchmark parameter, not measured from a prompt")
    parser.add_argument("--query-tokens", type=int, default=64, help="benchmark parameter, not measured from a prompt")
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--signal-tokens", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-dense", action="store_true", help="skip SDPA with the dense (T, T) mask")
    parser.add_argument("--skip-flex", action="store_true", help="skip FlexAttention")
    parser.add_argument(
        "--dense-max-tokens", type=int, default=8192, help="skip the dense-mask SDPA baseline above this many tokens"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shapes on CPU through the Triton interpreter; writes nothing"
    )
    args = parser.parse_args(argv)
    args.dtype = "bfloat16"

    if args.smoke:
        args.n, args.doc_tokens, args.prefix_tokens, args.query_tokens = [3], 20, 9, 7
        args.heads, args.kv_heads, args.head_dim, args.repeats = 4, 2, 64, 2
        args.dtype = "float32"
        results = [measure(n, args, torch.device("cpu"), torch.float32) for n in args.n]
        print(report(results, args, "CPU (Triton interpreter, smoke run: timings meaningless)"))
        return
    if not torch.cuda.is_available():
        sys.exit(
            "bench/triton_kernels.py needs a CUDA GPU (torch.cuda.is_available() is False); "
            "`--smoke` checks the script on CPU"
        )
    device = torch.device("cuda")
    results = []
    for n in args.n:
        results.append(measure(n, args, device, torch.bfloat16))
        body = report(results, args, torch.cuda.get_device_name(device))
        write_section("kernels", body)  # after every N, so a run cut short still publishes what it measured
    print(body)


if __name__ == "__main__":
    main()

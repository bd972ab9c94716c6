"""Triton kernels against the PyTorch reference paths: fp32, max error <= 1e-4.

Without a GPU the kernels run on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1, set below
before anything imports triton); shapes stay small because the interpreter is slow. On a CUDA machine
the same tests run the compiled kernels on the GPU.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from blockrank_rerank import attention  # noqa: E402
from blockrank_rerank.attention import dense_attention, plan_attention, resolve_backend, torch_attention  # noqa: E402
from blockrank_rerank.forward import run_to_scoring_layer  # noqa: E402
from blockrank_rerank.kernels import triton_available  # noqa: E402
from blockrank_rerank.layout import build_layout  # noqa: E402
from blockrank_rerank.scoring import document_scores, signal_attention  # noqa: E402
from blockrank_rerank.tokenize import TokenizedPrompt  # noqa: E402

from conftest import random_prompt, tiny_model  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = 1e-4
needs_triton = pytest.mark.skipif(
    not triton_available(), reason="triton is not installed (pip install 'blockrank-rerank[triton]')"
)


def uneven_layout(lengths=(5, 23, 1, 40, 9, 17), prefix=11, query=7, causal_positions=False):
    """A packed stream whose blocks straddle 16-token tiles in every way (length 1, > 2 tiles, odd offsets)."""
    prompt = TokenizedPrompt(
        prefix=[3] * prefix,
        documents=[[5] * n for n in lengths],
        query_block=[7] * query,
        query="q",
        truncated_documents=(),
    )
    return build_layout(prompt, query_position_offset=16384, causal_positions=causal_positions)


def random_qkv(heads, kv_heads, tokens, head_dim, seed=0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(heads, tokens, head_dim, generator=g) * spread  # (H, T, D)
    k = torch.randn(kv_heads, tokens, head_dim, generator=g) * spread  # (Hkv, T, D)
    v = torch.randn(kv_heads, tokens, head_dim, generator=g)  # (Hkv, T, D)
    return q.to(DEVICE), k.to(DEVICE), v.to(DEVICE)


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@needs_triton
@pytest.mark.parametrize(
    "heads, kv_heads, head_dim, block_m, block_n",
    [
        (4, 4, 64, 16, 16),
        (4, 2, 64, 32, 16),
        (8, 2, 128, 16, 32),
        (6, 1, 64, 16, 16),
        (3, 3, 128, 32, 32),
        (4, 2, 80, 16, 16),
    ],
)
def test_block_attention_matches_torch_path(heads, kv_heads, head_dim, block_m, block_n):
    from blockrank_rerank.kernels.block_attention import block_attention

    layout = uneven_layout()
    plan = plan_attention(layout, 48, DEVICE)
    q, k, v = random_qkv(heads, kv_heads, layout.num_tokens, head_dim, seed=heads + head_dim)
    scale = head_dim**-0.5
    row_start, prefix = layout.kernel_arguments(DEVICE)
    out = block_attention(q, k, v, row_start, prefix, scale, block_m=block_m, block_n=block_n)
    expected = torch_attention(q, k, v, plan, scale)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert max_error(out, expected) <= TOLERANCE
    assert max_error(out, dense_attention(q, k, v, plan, scale)) <= TOLERANCE


@needs_triton
@pytest.mark.parametrize("block_m, reader", [(16, 13), (32, 21), (16, 3)])
def test_block_attention_with_a_reader_block_across_tiles(block_m, reader):
    """ICR's calibration block: its rows see the prefix, the documents and themselves, never the query block.

    Its rows have a block start after their context end, the one case where a tile's two key ranges split at the
    query block; the query block (7 tokens) and the reader share tiles of 16 and 32 rows.
    """
    from blockrank_rerank.kernels.block_attention import block_attention

    layout = uneven_layout().with_reader_block([9] * reader)
    plan = plan_attention(layout, 48, DEVICE)
    q, k, v = random_qkv(4, 2, layout.num_tokens, 64, seed=reader)
    out = block_attention(q, k, v, *layout.kernel_arguments(DEVICE), 0.125, block_m=block_m, block_n=16)
    assert max_error(out, dense_attention(q, k, v, plan, 0.125)) <= TOLERANCE
    assert max_error(out, torch_attention(q, k, v, plan, 0.125)) <= TOLERANCE


@needs_triton
def test_icr_through_the_triton_backend_matches_torch():
    from blockrank_rerank.icr import icr_token_scores

    model = tiny_model("mistral", peaked=True).to(DEVICE)
    layout = uneven_layout(lengths=(5, 23, 1, 9), prefix=11, query=7)
    with torch.no_grad():
        fused = icr_token_scores(model, layout, [4, 5, 6, 7, 8], backend="triton")
        plain = icr_token_scores(model, layout, [4, 5, 6, 7, 8], backend="torch")
    torch.testing.assert_close(fused.query, plain.query, atol=1e-4, rtol=0)
    torch.testing.assert_close(fused.calibration, plain.calibration, atol=1e-4, rtol=0)


@needs_triton
def test_block_attention_plain_causal_layout():
    from blockrank_rerank.kernels.block_attention import block_attention

    layout = uneven_layout(lengths=(4, 13, 2), causal_positions=True)
    plan = plan_attention(layout, device=DEVICE)
    q, k, v = random_qkv(4, 2, layout.num_tokens, 64, seed=7)
    out = block_attention(q, k, v, *layout.kernel_arguments(DEVICE), 0.125)
    assert max_error(out, torch_attention(q, k, v, plan, 0.125)) <= TOLERANCE


@needs_triton
def test_block_attention_skips_tiles_of_other_blocks():
    """NaN values outside a row's allowed key ranges never reach it: those tiles are not even loaded.

    A kernel that loaded a masked tile would compute 0 * NaN = NaN in p @ v. With 16-row tiles the prefix
    fills tile 0 and the 40-token document (stream 37..76) holds tile 48..63 whole; rows of tiles shared
    by two blocks legitimately read both blocks' keys, so only whole tiles are checked.
    """
    from blockrank_rerank.kernels.block_attention import block_attention

    layout = uneven_layout(lengths=(21, 40, 9), prefix=16)
    start, length = layout.document_starts[1], layout.document_lengths[1]
    q, k, v = random_qkv(2, 1, layout.num_tokens, 64, seed=3)
    outside = torch.ones(layout.num_tokens, dtype=torch.bool, device=DEVICE)
    outside[: layout.prefix_length] = False
    outside[start : start + length] = False
    v[:, outside] = float("nan")
    row_start, prefix = layout.kernel_arguments(DEVICE)
    out = block_attention(q, k, v, row_start, prefix, 0.125, block_m=16, block_n=16)
    expected = dense_attention(q, k, torch.nan_to_num(v), plan_attention(layout, device=DEVICE), 0.125)
    own_tiles = [t for t in range(0, layout.num_tokens, 16) if start <= t and t + 16 <= start + length]
    assert own_tiles, "layout should give the long document whole tiles"
    for t in own_tiles:
        assert max_error(out[:, t : t + 16], expected[:, t : t + 16]) <= TOLERANCE
    assert max_error(out[:, : layout.prefix_length], expected[:, : layout.prefix_length]) <= TOLERANCE
    assert torch.isnan(out[:, layout.query_start :]).all(), "the query block must read every document"


@needs_triton
def test_block_attention_half_precision_follows_torch():
    from blockrank_rerank.kernels.block_attention import block_attention

    layout = uneven_layout(lengths=(6, 19, 3))
    plan = plan_attention(layout, device=DEVICE)
    q, k, v = (x.half() for x in random_qkv(4, 2, layout.num_tokens, 64, seed=5, spread=1.0))
    out = block_attention(q, k, v, *layout.kernel_arguments(DEVICE), 0.125)
    assert out.dtype == torch.float16
    assert max_error(out, torch_attention(q.float(), k.float(), v.float(), plan, 0.125)) <= 1e-2


@needs_triton
def test_block_attention_rejects_bad_inputs(monkeypatch):
    from blockrank_rerank.kernels.block_attention import block_attention

    q, k, v = random_qkv(3, 2, 10, 16)
    row_start = torch.zeros(10, dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match="multiple"):
        block_attention(q, k, v, row_start, 2, 0.25)
    q, k, v = random_qkv(4, 2, 10, 16)
    with pytest.raises(ValueError, match="k and v"):
        block_attention(q, k[:, :9], v, row_start, 2, 0.25)
    with pytest.raises(ValueError, match="row_start"):
        block_attention(q, k, v, row_start[:9], 2, 0.25)
    with pytest.raises(ValueError, match="prefix_length"):
        block_attention(q, k, v, row_start, 11, 0.25)
    with pytest.raises(TypeError, match="dtype"):
        block_attention(q, k.double(), v, row_start, 2, 0.25)
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="CUDA"):
            block_attention(q, k, v, row_start, 2, 0.25)


def reference_scores(q, k, owner, num_documents, scale):
    return document_scores(signal_attention(q, k, scale), owner, num_documents)


@needs_triton
@pytest.mark.parametrize(
    "heads, kv_heads, num_signal, head_dim, lengths, block_n, tiles_per_chunk",
    [
        (4, 2, 2, 64, (5, 23, 1, 40, 9), 16, 2),
        (8, 2, 1, 128, (31, 2, 17), 16, 1),
        (6, 3, 2, 64, (64,) * 3, 32, 2),
        (3, 1, 2, 80, (12, 7), 16, 4),
    ],
)
def test_score_readout_matches_reference(heads, kv_heads, num_signal, head_dim, lengths, block_n, tiles_per_chunk):
    from blockrank_rerank.kernels.score_readout import fused_document_scores

    g = torch.Generator().manual_seed(heads * 10 + num_signal)
    q = (torch.randn(heads, num_signal, head_dim, generator=g) * 3).to(DEVICE)  # (H, S, D)
    k = (torch.randn(kv_heads, sum(lengths), head_dim, generator=g) * 3).to(DEVICE)  # (Hkv, Dtok, D)
    owner = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).to(DEVICE)  # (Dtok,)
    scale = head_dim**-0.5
    scores = fused_document_scores(q, k, owner, len(lengths), scale, block_n=block_n, tiles_per_chunk=tiles_per_chunk)
    expected = reference_scores(q, k, owner, len(lengths), scale)
    assert scores.shape == (len(lengths),) and scores.dtype == torch.float32
    assert max_error(scores, expected) <= TOLERANCE
    assert abs(float(scores.sum()) - 1.0) < 1e-5


@needs_triton
def test_score_readout_merges_many_tiles_with_peaked_logits():
    """Long Dtok over 25 chunks of 4 tiles; logits in the hundreds, largest late, in no particular document order.

    exp() of such logits overflows fp32 without the running max; a merge that dropped a chunk's rescale
    or kept only the first chunk's maximum would miss the late peak by far more than 1e-4.
    """
    from blockrank_rerank.kernels.score_readout import fused_document_scores

    g = torch.Generator().manual_seed(11)
    heads, kv_heads, num_signal, head_dim, doc_tokens, num_documents = 4, 2, 2, 64, 1600, 37
    q = torch.randn(heads, num_signal, head_dim, generator=g) * 8  # (H, S, D)
    k = torch.randn(kv_heads, doc_tokens, head_dim, generator=g) * 8  # (Hkv, Dtok, D)
    k[:, 1400:1410] = q[::2, :1].mean(dim=1, keepdim=True) * 3  # a sharp late peak for every KV head
    owner = torch.randint(0, num_documents - 1, (doc_tokens,), generator=g)  # (Dtok,) interleaved owners
    owner[1400:1410] = num_documents - 1
    q, k, owner = q.to(DEVICE), k.to(DEVICE), owner.to(DEVICE)
    logits = (q[::2].float() @ k.float().transpose(1, 2)) * head_dim**-0.5
    assert float(logits.max()) > 100.0, "the test needs logits that overflow a naive exp"
    scores = fused_document_scores(q, k, owner, num_documents, head_dim**-0.5, block_n=16, tiles_per_chunk=4)
    expected = reference_scores(q, k, owner, num_documents, head_dim**-0.5)
    assert max_error(scores, expected) <= TOLERANCE
    assert int(expected.argmax()) == num_documents - 1, "the late peak should decide the top document"


@needs_triton
def test_score_readout_rejects_bad_inputs():
    from blockrank_rerank.kernels.score_readout import fused_document_scores

    q, k = torch.randn(3, 2, 16, device=DEVICE), torch.randn(2, 8, 16, device=DEVICE)
    owner = torch.zeros(8, dtype=torch.long, device=DEVICE)
    with pytest.raises(ValueError, match="incompatible"):
        fused_document_scores(q, k, owner, 1, 0.25)
    with pytest.raises(ValueError, match="document_index"):
        fused_document_scores(q[:2], k, owner[:7], 1, 0.25)


@needs_triton
@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3"])
def test_triton_backend_in_forward_and_reranker(family):
    """The registered "triton" backend and the fused readout reproduce the torch path on a peaked tiny model."""
    from blockrank_rerank import BlockRank, BlockRankConfig

    model = tiny_model(family, peaked=True, num_layers=3).to(DEVICE)
    layout = build_layout(random_prompt(7, seed=2), query_position_offset=16384)
    plan = plan_attention(layout, 24, DEVICE)
    with torch.no_grad():
        fused = run_to_scoring_layer(model, plan, 2, 2, backend="triton")
        plain = run_to_scoring_layer(model, plan, 2, 2, backend="torch")
    assert max_error(fused.hidden, plain.hidden) <= TOLERANCE
    config = BlockRankConfig(scoring_layer=2, device=DEVICE)
    triton_ranker = BlockRank(model, None, config.replace(attention_backend="triton"))
    torch_ranker = BlockRank(model, None, config.replace(attention_backend="torch"))
    assert triton_ranker.engine.backend == "triton"
    fused_scores, plain_scores = triton_ranker.engine.score_layout(layout), torch_ranker.engine.score_layout(layout)
    assert max_error(fused_scores, plain_scores) <= TOLERANCE
    assert float(plain_scores.max() - plain_scores.min()) > 0.05, "peaked model should not score uniformly"


def test_auto_backend_fallback_order(monkeypatch, caplog):
    from blockrank_rerank import kernels

    monkeypatch.setattr(attention, "_logged_choices", set())
    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with caplog.at_level(logging.INFO, logger="blockrank_rerank.attention"):
        assert resolve_backend("auto", torch.device("cuda")) == "triton"
        assert resolve_backend("auto", torch.device("cuda")) == "triton"
        assert resolve_backend("auto", torch.device("cpu")) == "torch"  # interpreted Triton is never automatic
    assert sum("'triton'" in r.getMessage() for r in caplog.records) == 1, "the choice is logged once"
    assert resolve_backend("auto", torch.device("cuda"), torch.bfloat16) == "triton"
    assert resolve_backend("auto", torch.device("cuda"), torch.float32) == "torch"  # fp32: per-block SDPA is faster
    assert resolve_backend("triton", torch.device("cuda"), torch.float32) == "triton"  # named explicitly: honoured
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # on CUDA too: interpreted kernels would be orders of magnitude slower
    monkeypatch.setattr(attention, "_logged_choices", set())
    with caplog.at_level(logging.INFO, logger="blockrank_rerank.attention"):
        assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert "interpreter" in caplog.records[-1].getMessage()
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    monkeypatch.setattr(torch, "__version__", "2.4.1")
    assert resolve_backend("auto", torch.device("cuda")) == "dense"


def test_explicit_backend_that_cannot_run_fails(monkeypatch):
    from blockrank_rerank import kernels

    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    with pytest.raises(ImportError, match=r"blockrank-rerank\[triton\]"):
        resolve_backend("triton", torch.device("cuda"))
    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="CUDA"):
        resolve_backend("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("triton", torch.device("cpu")) == "triton"
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend("flash", torch.device("cpu"))


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke mode is the CPU check of the GPU benchmark script")
def test_kernel_benchmark_script_smoke(capsys, monkeypatch):
    """`bench/triton_kernels.py --smoke` measures every method on tiny shapes, reporting small errors (no GPU)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "triton_kernels.py"
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location("bench_kernels", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "argv", [str(path), "--smoke"])
    spec.loader.exec_module(module)
    module.main(["--smoke", "--skip-flex"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 3 |")]
    assert [line.split("|")[3].strip() for line in table] == [
        "triton",
        "torch",
        "sdpa-dense",
        "fused readout",
        "torch readout",
    ]
    assert all(float(line.split("|")[-2]) <= TOLERANCE for line in table)

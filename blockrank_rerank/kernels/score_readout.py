"""Fused BlockRank score readout at layer L* (Triton): document scores without the probability matrix.

For each head h and signal token s, p[h, s, j] = softmax_j(q[h, s] . k[j] * scale) over all Dtok document
tokens; score[n] = mean over (h, s) of the sum of p[h, s, j] over the tokens j of document n (docs/design.md §4).
Two launches over chunks of CHUNK = BLOCK_N * TILES_PER_CHUNK document tokens, one program per
(chunk, KV head) holding the GROUP * S query rows that share the KV head:
  1. `_readout_partial_lse`: per row, the running max and sum of exp over the chunk's tiles (online merge);
  2. `_readout_scores`: merges the per-chunk (max, sum) pairs into one log-sum-exp per row (online again),
     then re-reads the chunk's keys, turns logits into probabilities, sums them over rows and atomically adds
     each token's share into its document's score.
Memory beyond the inputs: (Hkv, chunks, ROWS) partials and the (N,) scores; (H, S, Dtok) is never formed.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .block_attention import LOG2E, check_device


@triton.jit
def _signal_rows(Q, kv_head, stride_qh, stride_qs, offs_r, offs_d,
                 NUM_SIGNAL: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Queries of the GROUP * NUM_SIGNAL rows reading `kv_head`; row r is head kv_head * GROUP + r // S,
    signal r % S."""
    head = kv_head * GROUP + offs_r // NUM_SIGNAL
    signal = offs_r % NUM_SIGNAL
    r_ok = offs_r < GROUP * NUM_SIGNAL
    return tl.load(
        Q + head[:, None] * stride_qh + signal[:, None] * stride_qs + offs_d[None, :],
        mask=r_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0,
    )  # (ROWS, BLOCK_D)


@triton.jit
def _tile_logits(q, K, kv_head, stride_kh, stride_kt, offs_n, offs_r, offs_d, num_doc_tokens, qk_scale,
                 NUM_SIGNAL: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Logits in log2 units of the rows against one key tile; -inf on padded rows and tokens.
    Shapes: (ROWS, BLOCK_N)."""
    n_ok = offs_n < num_doc_tokens
    k = tl.load(
        K + kv_head * stride_kh + offs_n[None, :] * stride_kt + offs_d[:, None],
        mask=n_ok[None, :] & (offs_d[:, None] < HEAD_DIM), other=0.0,
    )  # (BLOCK_D, BLOCK_N)
    logits = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale
    valid = (offs_r[:, None] < GROUP * NUM_SIGNAL) & n_ok[None, :]
    return tl.where(valid, logits, float("-inf"))


@triton.jit
def _readout_partial_lse(
    Q, K, PartialMax, PartialSum,
    stride_qh, stride_qs, stride_kh, stride_kt, num_doc_tokens, qk_scale,
    NUM_SIGNAL: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr, TILES_PER_CHUNK: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    chunk = tl.program_id(0)
    kv_head = tl.program_id(1)
    offs_r = tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    q = _signal_rows(Q, kv_head, stride_qh, stride_qs, offs_r, offs_d, NUM_SIGNAL, GROUP, HEAD_DIM)
    m_i = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    for t in range(TILES_PER_CHUNK):
        offs_n = (chunk * TILES_PER_CHUNK + t) * BLOCK_N + tl.arange(0, BLOCK_N)
        logits = _tile_logits(q, K, kv_head, stride_kh, stride_kt, offs_n, offs_r, offs_d, num_doc_tokens, qk_scale,
                              NUM_SIGNAL, GROUP, HEAD_DIM, DOT_PRECISION)
        m_new = tl.maximum(m_i, tl.max(logits, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.math.exp2(m_i - m_safe) + tl.sum(tl.math.exp2(logits - m_safe[:, None]), 1)
        m_i = m_new
    partial = (kv_head * tl.num_programs(0) + chunk) * ROWS + offs_r
    tl.store(PartialMax + partial, m_i)
    tl.store(PartialSum + partial, l_i)


@triton.jit
def _readout_scores(
    Q, K, Owner, PartialMax, PartialSum, Scores,
    stride_qh, stride_qs, stride_kh, stride_kt, num_doc_tokens, qk_scale, row_weight,
    NUM_SIGNAL: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr, TILES_PER_CHUNK: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    chunk = tl.program_id(0)
    kv_head = tl.program_id(1)
    num_chunks = tl.num_programs(0)
    offs_r = tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    # Online log-sum-exp merge of every chunk's (max, sum) for this KV head's rows.
    m_i = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    for c in range(num_chunks):
        m_c = tl.load(PartialMax + (kv_head * num_chunks + c) * ROWS + offs_r)
        l_c = tl.load(PartialSum + (kv_head * num_chunks + c) * ROWS + offs_r)
        m_new = tl.maximum(m_i, m_c)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.math.exp2(m_i - m_safe) + l_c * tl.math.exp2(m_c - m_safe)
        m_i = m_new
    lse = tl.where(
        l_i > 0.0, m_i + tl.math.log2(tl.where(l_i > 0.0, l_i, 1.0)), 0.0
    )  # (ROWS,); padded rows: -inf logits, p = 0

    q = _signal_rows(Q, kv_head, stride_qh, stride_qs, offs_r, offs_d, NUM_SIGNAL, GROUP, HEAD_DIM)
    for t in range(TILES_PER_CHUNK):
        offs_n = (chunk * TILES_PER_CHUNK + t) * BLOCK_N + tl.arange(0, BLOCK_N)
        logits = _tile_logits(q, K, kv_head, stride_kh, stride_kt, offs_n, offs_r, offs_d, num_doc_tokens, qk_scale,
                              NUM_SIGNAL, GROUP, HEAD_DIM, DOT_PRECISION)
        token_mass = tl.sum(tl.math.exp2(logits - lse[:, None]), 0) * row_weight  # (BLOCK_N,)
        n_ok = offs_n < num_doc_tokens
        owner = tl.load(Owner + offs_n, mask=n_ok, other=0)
        tl.atomic_add(Scores + owner, token_mass, mask=n_ok)


def fused_document_scores(
    signal_queries: torch.Tensor,
    document_keys: torch.Tensor,
    document_index: torch.Tensor,
    num_documents: int,
    scale: float,
    *,
    block_n: Optional[int] = None,
    tiles_per_chunk: Optional[int] = None,
    num_warps: int = 4,
) -> torch.Tensor:
    """Document scores from layer L*, as `document_scores(signal_attention(...))` in one fused pass.

    Shapes: signal_queries (H, S, D), document_keys (Hkv, Dtok, D), document_index (Dtok,) -> (N,) fp32,
    summing to 1. Tensors on one CUDA device (or on CPU under TRITON_INTERPRET=1).
    """
    if signal_queries.dim() != 3 or document_keys.dim() != 3:
        raise ValueError(
            "signal_queries must be (H, S, D) and document_keys (Hkv, Dtok, D); "
            f"got {tuple(signal_queries.shape)}, {tuple(document_keys.shape)}"
        )
    heads, num_signal, head_dim = signal_queries.shape
    kv_heads, doc_tokens, key_dim = document_keys.shape
    if key_dim != head_dim or kv_heads < 1 or heads % kv_heads:
        raise ValueError(
            f"incompatible signal_queries {tuple(signal_queries.shape)} and document_keys {tuple(document_keys.shape)}"
        )
    if document_index.shape != (doc_tokens,):
        raise ValueError(f"document_index must have shape ({doc_tokens},), got {tuple(document_index.shape)}")
    if num_documents < 1 or doc_tokens < 1:
        raise ValueError(f"need at least one document token; got num_documents={num_documents}, Dtok={doc_tokens}")
    if signal_queries.dtype != document_keys.dtype or signal_queries.dtype not in (
        torch.float32, torch.float16, torch.bfloat16,
    ):
        raise TypeError(
            "queries and keys must share one dtype among float32/float16/bfloat16; "
            f"got {signal_queries.dtype}, {document_keys.dtype}"
        )
    check_device(signal_queries, document_keys, document_index)
    q = signal_queries if signal_queries.stride(-1) == 1 else signal_queries.contiguous()
    k = document_keys if document_keys.stride(-1) == 1 else document_keys.contiguous()
    owner = document_index.to(torch.int32).contiguous()

    group = heads // kv_heads
    rows = max(16, triton.next_power_of_2(group * num_signal))
    block_n = block_n or 64
    tiles_per_chunk = tiles_per_chunk or 8
    num_chunks = triton.cdiv(doc_tokens, block_n * tiles_per_chunk)
    partial_max = torch.empty(kv_heads, num_chunks, rows, dtype=torch.float32, device=q.device)  # (Hkv, chunks, ROWS)
    partial_sum = torch.empty_like(partial_max)
    scores = torch.zeros(num_documents, dtype=torch.float32, device=q.device)  # (N,)
    meta = dict(
        NUM_SIGNAL=num_signal, GROUP=group, HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        ROWS=rows, BLOCK_N=block_n, TILES_PER_CHUNK=tiles_per_chunk,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=num_warps,
    )
    grid = (num_chunks, kv_heads)
    _readout_partial_lse[grid](
        q, k, partial_max, partial_sum,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), doc_tokens, scale * LOG2E, **meta,
    )
    _readout_scores[grid](
        q, k, owner, partial_max, partial_sum, scores,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), doc_tokens, scale * LOG2E, 1.0 / (heads * num_signal),
        **meta,
    )
    return scores

"""Fused block-sparse attention over a packed BlockRank stream (Triton, forward only).

The kernel takes the attention rule of docs/design.md §2 as two plain per-row tensors:

    row i may attend key j  iff  j <= i  and  (j < context_end[i]  or  j >= row_start[i])

(`BlockLayout.kernel_arguments` derives them; this module imports nothing of the library). A program owns
BLOCK_M rows of one query head and visits two key ranges only: the shared context `[0, C)` with C the
largest context_end of its rows (clipped to its last row), and its own segment `[max(C, min row_start),
row_end)`. Every tile of other documents is skipped and no mask exists in memory beyond the two (T,) int32
tensors, so work and memory grow linearly with N. GQA: query head h reads key/value head h // (H // Hkv).
Softmax is online (running max and sum in fp32, base 2).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import triton_interpreting

LOG2E = 1.4426950408889634


@triton.jit
def _attend_key_range(
    acc, m_i, l_i, q, k_base, v_base, stride_kt, stride_vt,
    offs_m, row_start, context_end, offs_d, key_lo, key_hi, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Fold keys [key_lo, key_hi) into the running (acc, max, sum) of BLOCK_M rows."""
    d_ok = offs_d < HEAD_DIM
    for start in range(key_lo, key_hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < key_hi
        k = tl.load(
            k_base + offs_n[None, :] * stride_kt + offs_d[:, None], mask=n_ok[None, :] & d_ok[:, None], other=0.0
        )  # (BLOCK_D, BLOCK_N)
        qk = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        allowed = (offs_n[None, :] <= offs_m[:, None]) & (
            (offs_n[None, :] < context_end[:, None]) | (offs_n[None, :] >= row_start[:, None])
        )
        qk = tl.where(allowed & n_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing allowed yet stay at zero weight
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_base + offs_n[:, None] * stride_vt + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0
        )  # (BLOCK_N, BLOCK_D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _block_attention_fwd(
    Q, K, V, Out, RowStart, ContextEnd,
    stride_qh, stride_qt, stride_kh, stride_kt, stride_vh, stride_vt, stride_oh, stride_ot,
    num_tokens, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # Last row tiles first: the query block's tiles read the whole stream, so they start earliest.
    tile = tl.num_programs(0) - 1 - tl.program_id(0)
    head = tl.program_id(1)
    kv_head = head // GROUP
    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < num_tokens
    d_ok = offs_d < HEAD_DIM
    q = tl.load(
        Q + head * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
        mask=m_ok[:, None] & d_ok[None, :], other=0.0,
    )  # (BLOCK_M, BLOCK_D)
    row_start = tl.load(RowStart + offs_m, mask=m_ok, other=num_tokens)  # (BLOCK_M,); rows past T see nothing
    context_end = tl.load(ContextEnd + offs_m, mask=m_ok, other=0)  # (BLOCK_M,)
    k_base = K + kv_head * stride_kh
    v_base = V + kv_head * stride_vh

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    row_end = tl.minimum(tile * BLOCK_M + BLOCK_M, num_tokens)
    context_hi = tl.minimum(tl.max(context_end, 0), row_end)
    acc, m_i, l_i = _attend_key_range(
        acc, m_i, l_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, row_start, context_end, offs_d,
        0, context_hi, qk_scale, HEAD_DIM, BLOCK_N, DOT_PRECISION,
    )
    own_lo = tl.maximum(context_hi, tl.min(row_start, 0))
    acc, m_i, l_i = _attend_key_range(
        acc, m_i, l_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, row_start, context_end, offs_d,
        own_lo, row_end, qk_scale, HEAD_DIM, BLOCK_N, DOT_PRECISION,
    )
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(
        Out + head * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :], out.to(Out.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )


def default_tiles(head_dim: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for a head dim; untuned defaults in the FlashAttention-2 range."""
    if head_dim <= 64:
        return 128, 64, 4, 3
    return 128, 32, 8, 2


def block_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    row_start: torch.Tensor,
    context_end: torch.Tensor | int,
    scale: float,
    *,
    block_m: Optional[int] = None,
    block_n: Optional[int] = None,
    num_warps: Optional[int] = None,
    num_stages: Optional[int] = None,
) -> torch.Tensor:
    """Block-sparse attention by the rule in the module docstring.

    Shapes: q (H, T, D), k/v (Hkv, T, D), row_start (T,) int, context_end (T,) int or one int for every row
    -> (H, T, D) in q's dtype. H must be a multiple of Hkv. Tensors live on one CUDA device (or on CPU under
    TRITON_INTERPRET=1).
    """
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"q, k, v must be (heads, T, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    heads, tokens, head_dim = q.shape
    kv_heads = k.shape[0]
    if k.shape != v.shape or k.shape[1:] != (tokens, head_dim):
        raise ValueError(f"k and v must be (Hkv, {tokens}, {head_dim}); got {tuple(k.shape)} and {tuple(v.shape)}")
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads})")
    if row_start.shape != (tokens,):
        raise ValueError(f"row_start must have shape ({tokens},), got {tuple(row_start.shape)}")
    if isinstance(context_end, int):
        if not 0 <= context_end <= tokens:
            raise ValueError(
                "context_end given as one int (a prefix_length for every row) "
                f"must be in [0, {tokens}], got {context_end}"
            )
        context_end = torch.full((tokens,), context_end, dtype=torch.int32, device=row_start.device)
    if context_end.shape != (tokens,):
        raise ValueError(f"context_end must have shape ({tokens},), got {tuple(context_end.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(
            f"q, k, v must share one dtype among float32/float16/bfloat16; got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    check_device(q, k, v, row_start, context_end)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    row_start = row_start.to(torch.int32).contiguous()
    context_end = context_end.to(torch.int32).contiguous()
    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # (H, T, D)
    if tokens == 0:
        return out

    tiles = default_tiles(head_dim)
    block_m = block_m or tiles[0]
    block_n = block_n or tiles[1]
    grid = (triton.cdiv(tokens, block_m), heads)
    _block_attention_fwd[grid](
        q, k, v, out, row_start, context_end,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        tokens, scale * LOG2E,
        GROUP=heads // kv_heads, HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        BLOCK_M=block_m, BLOCK_N=block_n, DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps or tiles[2], num_stages=num_stages or tiles[3],
    )
    return out


def check_device(*tensors: torch.Tensor) -> None:
    """All tensors on one device: CUDA, or CPU when the Triton interpreter is on."""
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if device.type != "cuda" and not (device.type == "cpu" and triton_interpreting()):
        raise ValueError(
            f"Triton kernels need CUDA tensors (got {device}); "
            "set TRITON_INTERPRET=1 before importing triton to run them on CPU"
        )

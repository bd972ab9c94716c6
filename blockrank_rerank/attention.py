"""Attention backends over a packed BlockRank stream, chosen by name from a registry.

Every backend has the signature `(q, k, v, plan, scale) -> out` with q (H, T, D), k and v (Hkv, T, D) and
out (H, T, D); GQA key/value heads are shared by H // Hkv query heads. "torch" never builds a (T, T) mask:
the prefix runs causally, documents run in length buckets against the shared prefix plus themselves, and
the query block runs over the whole stream, so cost and memory grow linearly with the number of documents.
"dense" is the plain specification (explicit (T, T) mask, fp32 softmax) used as a fallback and in tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .layout import BlockLayout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DocumentBucket:
    """Documents of similar length attended together, padded to the longest one."""

    index: torch.Tensor  # (G, L) stream indices; padded slots point at the bucket's first token
    valid: torch.Tensor  # (G, L) bool, False on padded slots
    mask: torch.Tensor  # (G, 1, L, P + L) bool, True where the row may attend the key


@dataclass(frozen=True)
class AttentionPlan:
    """What a backend needs to know about one stream, computed once per forward and shared by all layers."""

    layout: BlockLayout
    buckets: tuple[DocumentBucket, ...] = ()
    query_mask: Optional[torch.Tensor] = None  # (Lq, T) bool, rows of the query block
    dense_mask: dict = field(default_factory=dict)  # cache: dtype -> (T, T) additive mask


def bucket_documents(lengths: tuple[int, ...], max_rows: int, slack: float = 0.9) -> list[list[int]]:
    """Group document indices, longest first, so padding stays under 1 - `slack` and rows under `max_rows`."""
    order = sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))
    buckets: list[list[int]] = []
    for k in order:
        if buckets:
            current = buckets[-1]
            longest = lengths[current[0]]
            if lengths[k] >= slack * longest and (len(current) + 1) * longest <= max_rows:
                current.append(k)
                continue
        buckets.append([k])
    return buckets


def plan_attention(layout: BlockLayout, max_rows: int = 8192, device: torch.device | str = "cpu") -> AttentionPlan:
    """Precompute document buckets and the query block's mask for `layout`."""
    if layout.causal_positions:
        return AttentionPlan(layout=layout)
    prefix = layout.prefix_length
    buckets = []
    for members in bucket_documents(layout.document_lengths, max_rows):
        longest = layout.document_lengths[members[0]]
        offsets = torch.arange(longest)
        starts = torch.tensor([layout.document_starts[k] for k in members])
        lengths = torch.tensor([layout.document_lengths[k] for k in members])
        valid = offsets[None, :] < lengths[:, None]  # (G, L)
        index = torch.where(valid, starts[:, None] + offsets[None, :], starts[:, None])  # (G, L)
        own = torch.ones(longest, longest, dtype=torch.bool).tril()[None] & valid[:, None, :]  # (G, L, L)
        sees_prefix = torch.ones(len(members), longest, prefix, dtype=torch.bool)  # (G, L, P)
        mask = torch.cat([sees_prefix, own], dim=2)[:, None]  # (G, 1, L, P + L)
        buckets.append(DocumentBucket(index.to(device), valid.to(device), mask.to(device)))
    query_rows = torch.arange(layout.query_start, layout.num_tokens)[:, None]
    query_mask = torch.arange(layout.num_tokens)[None, :] <= query_rows  # (Lq, T): all earlier blocks + causal
    return AttentionPlan(layout=layout, buckets=tuple(buckets), query_mask=query_mask.to(device))


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SDPA on one sequence, causal when `mask` is None. Shapes: q (H, Tq, D), k/v (Hkv, Tk, D) -> (H, Tq, D).

    The batch dimension added here is what lets PyTorch pick its flash kernel on CPU (3-D inputs fall back
    to the math kernel, 6x slower and quadratic in memory).
    """
    out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=True)
    return out[0]


def torch_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan, scale: float) -> torch.Tensor:
    """Block-sparse attention from per-block SDPA calls. Shapes: q (H, T, D), k/v (Hkv, T, D) -> (H, T, D)."""
    layout = plan.layout
    if layout.causal_positions:
        return sdpa(q, k, v, scale)
    prefix = layout.prefix_length
    pieces = [sdpa(q[:, :prefix], k[:, :prefix], v[:, :prefix], scale)]
    destinations = [torch.arange(prefix, device=q.device)]
    for bucket in plan.buckets:
        group = bucket.index.shape[0]
        q_docs = q[:, bucket.index].transpose(0, 1)  # (H, G, L, D) -> (G, H, L, D)
        k_docs = k[:, bucket.index].transpose(0, 1)  # (G, Hkv, L, D)
        v_docs = v[:, bucket.index].transpose(0, 1)  # (G, Hkv, L, D)
        k_prefix = k[None, :, :prefix].expand(group, -1, -1, -1)  # (G, Hkv, P, D)
        v_prefix = v[None, :, :prefix].expand(group, -1, -1, -1)  # (G, Hkv, P, D)
        keys = torch.cat([k_prefix, k_docs], dim=2)  # (G, Hkv, P + L, D)
        values = torch.cat([v_prefix, v_docs], dim=2)  # (G, Hkv, P + L, D)
        out = F.scaled_dot_product_attention(q_docs, keys, values, attn_mask=bucket.mask, scale=scale, enable_gqa=True)
        pieces.append(out.transpose(0, 1)[:, bucket.valid])  # (G, H, L, D) -> (H, G, L, D) -> (H, rows, D)
        destinations.append(bucket.index[bucket.valid])
    start = layout.query_start
    pieces.append(sdpa(q[:, start:], k, v, scale, plan.query_mask))
    destinations.append(torch.arange(start, layout.num_tokens, device=q.device))
    packed = torch.cat(pieces, dim=1)  # (H, T, D) in bucket order
    return torch.zeros_like(q).index_copy(1, torch.cat(destinations), packed)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan, scale: float) -> torch.Tensor:
    """Attention with an explicit (T, T) additive mask and fp32 softmax. Shapes: as `torch_attention`."""
    groups = q.shape[0] // k.shape[0]
    k = k.repeat_interleave(groups, dim=0)  # (Hkv, T, D) -> (H, T, D)
    v = v.repeat_interleave(groups, dim=0)
    if q.dtype not in plan.dense_mask:
        allowed = plan.layout.allowed().to(q.device)
        plan.dense_mask[q.dtype] = torch.zeros(allowed.shape, device=q.device).masked_fill(~allowed, torch.finfo(torch.float32).min)
    logits = (q.float() @ k.float().transpose(1, 2)) * scale + plan.dense_mask[q.dtype]  # (H, T, T)
    return (logits.softmax(dim=-1) @ v.float()).to(q.dtype)


AttentionFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttentionPlan, float], torch.Tensor]
ATTENTION_FUNCTIONS: dict[str, AttentionFunction] = {"torch": torch_attention, "dense": dense_attention}


def resolve_backend(name: str, device: torch.device) -> str:
    """The registered backend for `name`; "auto" picks the fastest one available on `device`."""
    if name == "auto":
        return "torch"
    if name not in ATTENTION_FUNCTIONS:
        raise ValueError(f"unknown attention backend {name!r}; available: {sorted(ATTENTION_FUNCTIONS)} or 'auto'")
    return name

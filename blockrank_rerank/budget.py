"""How one scoring call fits `memory_budget_mb`: one shot, or chunked with hidden states in memory or in a file.

The estimates count activation memory only (model weights excluded) and are deliberately generous: per
token, a decoder layer of the packed path holds about 6 hidden-sized vectors, 6 query-sized vectors and 8
key/value-sized vectors at its peak (norm input and output, q/k/v, per-bucket gathers and the prefix keys
concatenated to them, the attention output before and after unpacking, the residual sums). The figure is
checked against measured peaks by `tests/test_memory.py` and `bench/memory.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from .chunked import MAX_LOGITS
from .forward import TOKEN_CHUNK, decoder_of
from .layout import BlockLayout

logger = logging.getLogger(__name__)
MB = 1 << 20
ALLOCATOR_SLACK = (
    32 * MB
)  # freed memory an allocator may keep (glibc serves blocks up to 32 MiB from its heap and trims lazily)


@dataclass(frozen=True)
class ModelShape:
    """The dimensions that set activation memory."""

    hidden: int  # C
    heads: int  # H
    kv_heads: int  # Hkv
    head_dim: int  # D
    intermediate: int  # MLP width
    element_size: int  # bytes per value in the compute dtype

    @classmethod
    def of(cls, model: Any) -> "ModelShape":
        """The shape of a Llama-style causal LM."""
        decoder = decoder_of(model)
        attn = decoder.layers[0].self_attn
        weight = decoder.embed_tokens.weight
        return cls(
            hidden=int(weight.shape[1]),
            heads=attn.q_proj.out_features // attn.head_dim,
            kv_heads=attn.k_proj.out_features // attn.head_dim,
            head_dim=int(attn.head_dim),
            intermediate=int(decoder.layers[0].mlp.up_proj.out_features),
            element_size=weight.element_size(),
        )

    @property
    def bytes_per_token(self) -> int:
        """Peak activation bytes per token of one decoder layer (see the module docstring)."""
        return self.element_size * (
            6 * self.hidden + 6 * self.heads * self.head_dim + 8 * self.kv_heads * self.head_dim
        )

    @property
    def fixed_bytes(self) -> int:
        """Working memory that does not grow with tokens: one MLP chunk, the query block's fp32 logits,
        allocator slack."""
        return self.element_size * TOKEN_CHUNK * 4 * self.intermediate + 4 * 3 * MAX_LOGITS + ALLOCATOR_SLACK


@dataclass(frozen=True)
class ExecutionPlan:
    """One shot (`chunk_tokens` None) or chunked; what the call is expected to hold at its peak."""

    chunk_tokens: Optional[int]  # document tokens per chunk; None: the one-shot path
    spill: bool  # document hidden states in a temporary file rather than in memory
    estimated_bytes: int  # expected peak activation memory

    @property
    def chunked(self) -> bool:
        return self.chunk_tokens is not None


def one_shot_bytes(tokens: int, shape: ModelShape) -> int:
    """Estimated peak activation memory of the one-shot path over a stream of `tokens` tokens (one prompt, or a
    pack of several)."""
    return shape.fixed_bytes + tokens * shape.bytes_per_token


def plan_execution(layout: BlockLayout, shape: ModelShape, budget_mb: Optional[float]) -> ExecutionPlan:
    """The one-shot path when it fits `budget_mb` (or no budget is set), else the largest chunks that fit.

    The document hidden states (Dtok x C) stay in memory when they take at most half the budget, else they
    spill to a temporary file. A budget too small for even one document per chunk is logged and exceeded.
    """
    whole = one_shot_bytes(layout.num_tokens, shape)
    if budget_mb is None or whole <= budget_mb * MB:
        return ExecutionPlan(None, False, whole)
    budget = int(budget_mb * MB)
    store = (layout.query_start - layout.prefix_length) * shape.hidden * shape.element_size
    spill = store > budget // 2
    frame = shape.fixed_bytes + (layout.prefix_length + layout.query_length) * shape.bytes_per_token
    working = budget - frame - (0 if spill else store)
    longest = max(layout.document_lengths)
    chunk_tokens = max(longest, working // shape.bytes_per_token)
    estimated = frame + (0 if spill else store) + chunk_tokens * shape.bytes_per_token
    if estimated > budget:
        logger.warning(
            "memory_budget_mb=%s is below the %.0f MB needed for one %d-token document per chunk; running anyway",
            budget_mb,
            estimated / MB,
            longest,
        )
    return ExecutionPlan(int(chunk_tokens), spill, estimated)


__all__ = ["ExecutionPlan", "ModelShape", "one_shot_bytes", "plan_execution"]

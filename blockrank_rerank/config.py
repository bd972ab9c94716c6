"""The one validated, frozen configuration object of a BlockRank reranker."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch

SCORING_MODES = ("blockrank", "full", "icr")
ATTENTION_BACKENDS = ("auto", "triton", "torch", "dense")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Per-checkpoint settings that are facts about how the checkpoint was trained.
KNOWN_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "quicktensor/blockrank-msmarco-mistral-7b": {
        "scoring_layer": 20,
        "num_signal_tokens": 2,
        "query_position_offset": 16384,
        "max_block_tokens": 512,
    },
}


def default_scoring_layer(num_layers: int) -> int:
    """L* for a model with `num_layers` decoder layers: 5/8 of the depth, as layer 20 of Mistral-7B's 32.

    The released checkpoint was trained to concentrate relevance at layer 20 (0-based) of 32; for other
    models the same relative depth is the starting point (`blockrank sweep-layers` measures better ones).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    return min(num_layers - 1, round(num_layers * 5 / 8))


@dataclass(frozen=True)
class BlockRankConfig:
    """How a prompt is built, run and scored. Unknown keys raise `TypeError` (dataclass semantics)."""

    scoring_layer: Optional[int] = None  # L*, 0-based decoder layer read for scores; None: default_scoring_layer
    num_signal_tokens: int = 2  # last tokens of the query block whose attention is read (1 or 2)
    query_position_offset: Optional[int] = None  # first position id of the query block; None: P + max_block_tokens (right after the longest block); BlockRank-trained checkpoints: 16384
    max_block_tokens: int = 384  # cap on tokens per block (prefix, each document, query block)
    scoring_mode: str = "blockrank"  # "blockrank": block-sparse attention; "full": plain causal attention; "icr": zero-shot ICR (icr.py)
    early_exit: bool = True  # stop after layer L* (False runs every layer and the LM head, for baselines)
    attention_backend: str = "auto"  # "auto" | "triton" (fused kernel, CUDA) | "torch" (per-block SDPA) | "dense" (explicit mask)
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 | float16
    device: str = "cpu"  # torch device string
    batch_tokens: int = 8192  # max query rows in one document attention call (bounds attention memory)
    memory_budget_mb: Optional[float] = 2048  # activation memory one call may use (weights excluded); above it "blockrank" scoring runs chunked, exactly; None: always one shot

    def __post_init__(self) -> None:
        if self.scoring_layer is not None and (not isinstance(self.scoring_layer, int) or self.scoring_layer < 0):
            raise ValueError(f"scoring_layer must be a non-negative int or None, got {self.scoring_layer!r}")
        if not isinstance(self.num_signal_tokens, int) or self.num_signal_tokens < 1:
            raise ValueError(f"num_signal_tokens must be an int >= 1, got {self.num_signal_tokens!r}")
        if self.query_position_offset is not None and (not isinstance(self.query_position_offset, int) or self.query_position_offset < 0):
            raise ValueError(f"query_position_offset must be an int >= 0 or None, got {self.query_position_offset!r}")
        if not isinstance(self.max_block_tokens, int) or self.max_block_tokens < 8:
            raise ValueError(f"max_block_tokens must be an int >= 8, got {self.max_block_tokens!r}")
        if self.scoring_mode not in SCORING_MODES:
            raise ValueError(f"scoring_mode must be one of {SCORING_MODES}, got {self.scoring_mode!r}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.batch_tokens, int) or self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be an int >= 1, got {self.batch_tokens!r}")
        budget = self.memory_budget_mb
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0):
            raise ValueError(f"memory_budget_mb must be None or a number > 0, got {budget!r}")
        torch.device(self.device)  # raises RuntimeError naming a malformed device string

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def replace(self, **changes: Any) -> "BlockRankConfig":
        """A copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes)

    def resolved_query_position_offset(self, prefix_length: int) -> int:
        """First position id of the query block for a prompt whose prefix has `prefix_length` real tokens.

        A model not trained with BlockRank has only seen the query follow the passages closely, so the default
        puts it right after the longest block a document may have; a checkpoint trained with a far offset
        (16384 for the released one and for ours) records it, and that value is used as given.
        """
        return prefix_length + self.max_block_tokens if self.query_position_offset is None else self.query_position_offset

    def resolved_scoring_layer(self, num_layers: int) -> int:
        """L* for a model of `num_layers` layers, checked to exist."""
        layer = default_scoring_layer(num_layers) if self.scoring_layer is None else self.scoring_layer
        if layer >= num_layers:
            raise ValueError(f"scoring_layer={layer} but the model has only {num_layers} layers (0-based)")
        return layer

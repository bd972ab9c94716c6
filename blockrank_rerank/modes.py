"""Scoring modes by name: what each needs of the prompt layout and how it turns a layout into document scores.

`engine.Engine` looks its mode up once (`SCORING_MODES[config.scoring_mode]`); config validation, the CLI's
choices, the evaluation methods and the adapters' docstrings all take their lists from this registry. A new
mode is one class here. Every mode reads attention through the attention-backend registry (`attention.py`)
and the one layer loop (`forward.run_layers`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import torch

from .chunked import chunked_scores
from .forward import Readings
from .icr import calibrated_document_scores, calibration_block, icr_token_scores
from .layout import BlockLayout


class ScoringMode(ABC):
    """How a layout becomes scores; class attributes declare what the mode needs and promises."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for help texts and docs
    causal_positions: ClassVar[bool] = False  # a plain causal prompt (positions 0..T-1) instead of the BlockRank layout
    chunkable: ClassVar[bool] = False  # an exact chunked path exists, so `memory_budget_mb` can bound its memory
    scores_sum_to_one: ClassVar[bool] = (
        True  # shares of one call; False: unbounded scores (copies are not renormalised)
    )
    reads_relevance: ClassVar[bool] = False  # also gives relevance logits (Readings.relevance_logits)
    packable: ClassVar[bool] = False  # several prompts can share one forward (`score_pack`)

    @abstractmethod
    def score(self, engine: Any, layout: BlockLayout) -> Readings:
        """Scores (N,) of the documents of `layout` in input order, with `engine`'s model and settings (`Engine`),
        and their relevance logits where the mode reads them."""

    def score_pack(self, engine: Any, layouts: Sequence[BlockLayout]) -> list[Readings]:
        """`score` of each of `layouts`; a packable mode overrides this with one forward over all of them (the
        engine packs only for such modes, so this default, one forward per prompt, is what any other mode means)."""
        return [self.score(engine, layout) for layout in layouts]


class BlockRankMode(ScoringMode):
    """The signal tokens' attention at L* over the block-sparse layout (docs/design.md §4), one shot or chunked."""

    name = "blockrank"
    summary = "block-sparse attention read at layer L* (the default)"
    chunkable = True
    reads_relevance = True
    packable = True

    def score(self, engine: Any, layout: BlockLayout) -> Readings:
        plan = engine.execution_plan(layout)
        if not plan.chunked:
            return engine.readout_scores([layout])[0]
        with engine.lock, torch.inference_mode():
            return chunked_scores(
                engine.model,
                layout,
                engine.readout,
                engine.config.num_signal_tokens,
                plan.chunk_tokens,
                spill=plan.spill,
                max_rows=engine.config.batch_tokens,
            )

    def score_pack(self, engine: Any, layouts: Sequence[BlockLayout]) -> list[Readings]:
        return engine.readout_scores(layouts)


class FullAttentionMode(BlockRankMode):
    """The same readout over plain causal attention and positions: the paper's full-attention baseline."""

    name = "full"
    summary = "plain causal attention over the same prompt (the paper's full-attention baseline)"
    causal_positions = True
    chunkable = False


class ICRMode(ScoringMode):
    """Zero-shot ICR (docs/design.md §6): every layer's query attention, calibrated by an "N/A" query block."""

    name = "icr"
    summary = 'zero-shot ICR: every layer\'s query attention calibrated with the query "N/A" (for untrained models)'
    scores_sum_to_one = False

    def score(self, engine: Any, layout: BlockLayout) -> Readings:
        engine.execution_plan(layout)  # logs when the call exceeds memory_budget_mb (ICR cannot chunk)
        calibration = calibration_block(engine.tokenizer, engine.config.max_block_tokens)
        with engine.lock, torch.inference_mode():
            tokens = icr_token_scores(engine.model, layout, calibration, engine.backend, engine.config.batch_tokens)
        return Readings(calibrated_document_scores(tokens, layout.num_documents))


SCORING_MODES: dict[str, ScoringMode] = {mode.name: mode for mode in (BlockRankMode(), FullAttentionMode(), ICRMode())}

__all__ = ["SCORING_MODES", "ScoringMode"]

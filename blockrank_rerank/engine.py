"""The engine behind `BlockRank`: a loaded model with its settings, turning a query and contents into scores.

It owns the walk text -> segments -> tokens -> layout (`layout`), runs the configured scoring mode over the
layout (`score_layout`, `modes.py`) and decides between one shot and exact chunks (`execution_plan`). The
layer sweep, the benchmarks and the tests use it directly; users call `BlockRank`, which holds one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from .attention import AttentionPlan, PromptPack, plan_attention, resolve_backend
from .caller_warnings import warn_at_caller
from .budget import MB, ExecutionPlan, ModelShape, one_shot_bytes, plan_execution
from .config import BlockRankConfig
from .forward import PackedStream, Readings, Readout, decoder_of, run_readout
from .inputs import unique_contents
from .layout import BlockLayout, build_layout
from .modes import SCORING_MODES
from .scoring import fuse_with_input_order
from .tokenize import tokenize_prompt

logger = logging.getLogger(__name__)


class Engine:
    """A causal LM, its tokenizer and a `BlockRankConfig`, resolved once: L*, readout, device, backend, mode."""

    def __init__(self, model: Any, tokenizer: Any, config: BlockRankConfig, name: str = "custom") -> None:
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.num_layers = len(decoder_of(model).layers)
        self.scoring_layer = config.resolved_scoring_layer(self.num_layers)
        self.device = next(model.parameters()).device
        self.backend = resolve_backend(
            config.attention_backend, self.device, config.autocast_dtype or next(model.parameters()).dtype
        )
        self.shape = ModelShape.of(model)
        self.mode = SCORING_MODES[config.scoring_mode]
        self.readout = readout_of(config, self.scoring_layer, self.shape.heads, self.device)
        self.lock = threading.Lock()  # forwards on one model run one at a time; tokenising stays outside

    def layout(self, query: str, contents: list[str]) -> BlockLayout:
        """Tokenised, packed prompt for `query` over document `contents` (validated strings)."""
        config = self.config
        prompt = tokenize_prompt(self.tokenizer, query, contents, config.max_block_tokens, config.blocks_per_document)
        if prompt.truncated_documents:
            limit = (
                f"max_block_tokens={config.max_block_tokens}"
                if config.blocks_per_document == 1
                else f"max_document_blocks={config.max_document_blocks} blocks of {config.max_block_tokens} tokens"
            )
            warn_at_caller(
                f"{len(prompt.truncated_documents)} of {len(contents)} documents exceed {limit} and were truncated"
                + (" (long_documents='split' continues them in more blocks)" if config.blocks_per_document == 1 else "")
            )
        offset = self.config.resolved_query_position_offset(len(prompt.prefix))
        last_document_position = len(prompt.prefix) + max((len(doc) for doc in prompt.documents), default=0)
        if offset < last_document_position and not self.mode.causal_positions:
            warn_at_caller(
                f"query_position_offset={offset} falls inside the documents' positions "
                f"(up to {last_document_position - 1}); the query block then shares position ids with document "
                "tokens. Use an offset >= prefix + max_block_tokens"
            )
        return build_layout(prompt, query_position_offset=offset, causal_positions=self.mode.causal_positions)

    def attention_plan(self, layout: BlockLayout) -> AttentionPlan:
        """Buckets and masks of `layout` for the attention backends, on the model's device."""
        return plan_attention(layout, self.config.batch_tokens, self.device)

    def readout_scores(self, layouts: Sequence[BlockLayout]) -> list[Readings]:
        """Readings of each of `layouts` in one shot: the readout's layers (L*, or the head selection) read in one
        forward over all of them, laid end to end when there are several (a `PromptPack`)."""
        plans = [self.attention_plan(layout) for layout in layouts]
        plan = plans[0] if len(plans) == 1 else PromptPack(tuple(plans))
        decoder = decoder_of(self.model)
        last_layer = None if self.config.early_exit else self.num_layers
        with self.lock, torch.inference_mode():
            stream = PackedStream.start(decoder, plan, self.backend)
            readings = run_readout(decoder, stream, self.readout, self.config.num_signal_tokens, last_layer)
        if len(layouts) == 1:
            return [readings]
        counts = [layout.num_documents for layout in layouts]
        shares = readings.shares.split(counts)  # (N_1 + ... + N_k,) -> k tensors (N_i,)
        relevance = readings.relevance_logits.split(counts) if readings.relevance_logits is not None else None
        return [Readings(part, None if relevance is None else relevance[i]) for i, part in enumerate(shares)]

    def packs(self, layouts: Sequence[BlockLayout]) -> list[list[BlockLayout]]:
        """`layouts` in order, grouped for one forward each: a packable mode packs consecutive prompts while they
        fit `max_pack_tokens` and, together, `memory_budget_mb`; any other prompt runs alone."""
        limit = self.config.max_pack_tokens
        packs: list[list[BlockLayout]] = []
        open_tokens = 0  # tokens of the last pack while it can take more prompts, else 0
        for layout in layouts:
            total = open_tokens + layout.num_tokens
            if open_tokens and total <= limit and self.fits_one_shot(total):
                packs[-1].append(layout)
                open_tokens = total
                continue
            packs.append([layout])
            can_open = self.mode.packable and layout.num_tokens <= limit and self.fits_one_shot(layout.num_tokens)
            open_tokens = layout.num_tokens if can_open else 0
        return packs

    def fits_one_shot(self, tokens: int) -> bool:
        """Whether a one-shot forward over `tokens` tokens stays within `memory_budget_mb`."""
        budget = self.config.memory_budget_mb
        return budget is None or one_shot_bytes(tokens, self.shape) <= budget * MB

    def execution_plan(self, layout: BlockLayout) -> ExecutionPlan:
        """One shot or chunked for `layout` under `memory_budget_mb`; only a chunkable mode with early exit chunks."""
        budget = self.config.memory_budget_mb
        if self.mode.chunkable and self.config.early_exit:
            plan = plan_execution(layout, self.shape, budget)
            if plan.chunked:
                logger.info(
                    "%d tokens exceed memory_budget_mb=%s: chunks of %d document tokens%s",
                    layout.num_tokens,
                    budget,
                    plan.chunk_tokens,
                    ", hidden states spilled to disk" if plan.spill else "",
                )
            return plan
        plan = plan_execution(layout, self.shape, None)
        if budget is not None and plan.estimated_bytes > budget * MB:
            logger.warning(
                "scoring_mode=%r (early_exit=%s) cannot run chunked: ~%.0f MB for %d tokens exceeds "
                "memory_budget_mb=%s",
                self.config.scoring_mode,
                self.config.early_exit,
                plan.estimated_bytes / MB,
                layout.num_tokens,
                budget,
            )
        return plan

    def precision(self) -> contextlib.AbstractContextManager:
        """Autocast to the config's mixed-precision dtype (bf16 matmuls), or nothing. Code that runs `self.model`
        itself (generation, say) needs it too: under bfloat16-mixed the decoder's linear weights are held in bf16."""
        dtype = self.config.autocast_dtype
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def score_layout(self, layout: BlockLayout) -> torch.Tensor:
        """Scores (N,) of the documents of `layout`, in input order, fp32, by the configured scoring mode (modes.py)."""
        return self.read_layout(layout).shares

    def read_layout(self, layout: BlockLayout) -> Readings:
        """Shares and relevance logits (N,) of `layout`'s blocks, fp32 on the CPU, checked finite."""
        return self.read_layouts([layout])[0]

    def read_layouts(self, layouts: Sequence[BlockLayout]) -> list[Readings]:
        """`read_layout` of each of `layouts`, consecutive ones packed into one forward where `packs` allows."""
        results: list[Readings] = []
        for pack in self.packs(layouts):
            with self.precision():
                parts = self.mode.score_pack(self, pack) if len(pack) > 1 else [self.mode.score(self, pack[0])]
            for readings in parts:
                relevance = readings.relevance_logits
                results.append(
                    Readings(
                        self.checked(readings.shares.float().cpu()),
                        None if relevance is None else self.checked(relevance.float().cpu()),
                    )
                )
        return results

    def checked(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores`, or FloatingPointError when any is NaN or infinite (an overflow in a low-precision dtype)."""
        if not torch.isfinite(scores).all():
            raise FloatingPointError(f"non-finite scores from {self.name} in {self.config.dtype}; try dtype='float32'")
        return scores

    def document_scores(self, query: str, contents: list[str]) -> DocumentScores:
        """Scores and relevance scores of `contents` in input order; identical contents are scored once and share
        them.

        Shares are renormalised over the copies so that one call's scores still sum to 1 (modes whose scores
        do not sum to one are copied as they are). No documents: []; one distinct document: share 1.0 (and no
        forward unless the mode reads relevance). With `input_order_weight` > 0 the scores are then fused with the
        input order (reciprocal ranks); relevance scores are the model's alone.
        """
        return self.document_scores_batch([(query, contents)])[0]

    def document_scores_batch(self, requests: Sequence[tuple[str, list[str]]]) -> list[DocumentScores]:
        """`document_scores` of each (query, contents); their prompts share forwards where `packs` allows, and
        each request's scores equal those of a call of its own."""
        prepared = [self.prepare(query, contents) for query, contents in requests]
        readings = iter(self.read_layouts([request.layout for request in prepared if request.layout is not None]))
        return [self.finish(request, next(readings) if request.layout is not None else None) for request in prepared]

    def prepare(self, query: str, contents: list[str]) -> "PreparedRequest":
        """`contents` deduplicated and, when scoring them needs a forward, laid out with `query`."""
        unique, inverse = unique_contents(contents)
        if len(unique) < len(contents):
            logger.info("%d duplicate documents scored once each", len(contents) - len(unique))
        needs_forward = len(unique) > 1 or (self.mode.reads_relevance and len(unique) == 1)
        return PreparedRequest(len(unique), inverse, self.layout(query, unique) if needs_forward else None)

    def finish(self, request: "PreparedRequest", readings: Optional[Readings]) -> DocumentScores:
        """Scores in input order from the readings of `request`'s distinct documents (see `document_scores`)."""
        count, relevance = request.unique, None
        if readings is None:
            shares = torch.ones(count)
        else:
            how, owners = self.config.split_scores, request.layout.document_of_block
            shares = torch.ones(1) if count == 1 else document_of_blocks(readings.shares, owners, count, how)
            if readings.relevance_logits is not None:
                logits = document_of_blocks(
                    readings.relevance_logits, owners, count, "logsumexp" if how == "sum" else how
                )
                relevance = calibrated_relevance(logits, self.config.relevance_calibration)
        select = torch.tensor(request.inverse, dtype=torch.long)
        scores = shares[select] if request.inverse else shares[:0]
        sums_to_one = self.mode.scores_sum_to_one and (
            self.config.blocks_per_document == 1 or self.config.split_scores == "sum"
        )
        if count < len(request.inverse) and sums_to_one:
            scores = scores / scores.sum()
        if self.config.input_order_weight > 0:
            scores = fuse_with_input_order(scores, self.config.input_order_weight)
        return DocumentScores(scores.tolist(), None if relevance is None else relevance[select].tolist())


@dataclass(frozen=True)
class PreparedRequest:
    """One request's distinct documents, where each input document went among them, and its layout (None when no
    forward is needed: no documents, or one without a relevance readout)."""

    unique: int  # distinct documents
    inverse: list[int]  # per input document, the index of its distinct copy
    layout: Optional[BlockLayout]


@dataclass(frozen=True)
class DocumentScores:
    """Per document, in input order: the score ranked by (a share, or fused) and the calibrated relevance score in
    [0, 1] (None for a mode without one)."""

    scores: list[float]
    relevance: Optional[list[float]] = None


def calibrated_relevance(logits: torch.Tensor, calibration: tuple[float, float]) -> torch.Tensor:
    """Relevance scores in [0, 1] from relevance logits: sigmoid(slope * logit + intercept), the model's fitted
    calibration (`relevance_calibration`). Shapes: (N,) -> (N,)."""
    slope, intercept = calibration
    return torch.sigmoid(slope * logits.double() + intercept)


def document_of_blocks(block_scores: torch.Tensor, owners: tuple[int, ...], count: int, how: str) -> torch.Tensor:
    """Scores (count,) of documents from the scores of their blocks (`owners`: document of each block; () when
    each document is one block): the sum of a split document's block shares, its best block's, or ("logsumexp",
    for log-masses) the log of the summed masses. Shapes: (blocks,) -> (count,)."""
    if not owners:
        return block_scores
    index = torch.tensor(owners, dtype=torch.long)
    if how == "sum":
        return torch.zeros(count, dtype=block_scores.dtype).index_add(0, index, block_scores)
    peak = torch.full((count,), float("-inf"), dtype=block_scores.dtype).scatter_reduce(0, index, block_scores, "amax")
    if how == "max":
        return peak
    mass = torch.zeros(count, dtype=block_scores.dtype).index_add(0, index, (block_scores - peak[index]).exp())
    return peak + mass.log()


def readout_of(config: BlockRankConfig, scoring_layer: int, heads: int, device: torch.device) -> Readout:
    """What the readout reads: every head of L* equally, or the configured head weights, checked against the model."""
    if config.head_weights is None:
        return {scoring_layer: None}
    readout: Readout = {}
    for layer, weights in config.head_weights:
        if len(weights) != heads:
            raise ValueError(
                f"head_weights[{layer}] lists {len(weights)} weights but the model has {heads} query heads"
            )
        readout[layer] = torch.tensor(weights, dtype=torch.float32, device=device)
    return readout


__all__ = ["Engine"]

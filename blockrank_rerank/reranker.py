"""The BlockRank reranker: one object, one obvious call (`rerank`), a batch call with a progress bar."""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .attention import plan_attention, resolve_backend
from .budget import MB, ExecutionPlan, ModelShape, plan_execution
from .chunked import chunked_scores
from .config import BlockRankConfig
from .forward import ScoringState, decoder_of, run_to_scoring_layer
from .icr import calibrated_document_scores, calibration_block, icr_token_scores
from .inputs import Candidates, DocumentInput, check_documents, check_queries, check_query, check_top_k, unique_contents
from .layout import BlockLayout, build_layout
from .loading import EMBEDDED_DEFAULT, load_model_and_tokenizer, model_settings
from .results import RankedList, rank_documents
from .scoring import document_scores, signal_attention
from .tokenize import tokenize_prompt

logger = logging.getLogger(__name__)


class BlockRank:
    """Ranks candidate documents for a query by the attention a causal LM pays them at layer L*.

    Example:
        >>> ranker = BlockRank.from_pretrained()          # embedded SmolLM2-135M + BlockRank adapter, offline
        >>> ranker.rerank("what is a cat", ["Cats are felines.", "Stocks fell."], top_k=1)[0].index
    """

    def __init__(self, model: Any, tokenizer: Any, config: Optional[BlockRankConfig] = None, *, name: str = "custom") -> None:
        self.config = config or BlockRankConfig()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.num_layers = len(decoder_of(model).layers)
        self.scoring_layer = self.config.resolved_scoring_layer(self.num_layers)
        self.device = next(model.parameters()).device
        self.backend = resolve_backend(self.config.attention_backend, self.device)
        self.shape = ModelShape.of(model)
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls, model_name_or_path: Optional[str] = None, *, config: Optional[BlockRankConfig] = None, **overrides: Any
    ) -> "BlockRank":
        """Load a Llama/Mistral/Qwen2-family causal LM by id or path (None: the embedded offline default).

        Settings known for a released checkpoint (e.g. L*=20 for quicktensor/blockrank-msmarco-mistral-7b) or
        stored in a `blockrank train` checkpoint apply first; `config` and keyword `overrides` (any BlockRankConfig field) win over them.
        """
        base = config or BlockRankConfig(**model_settings(model_name_or_path))
        config = base.replace(**overrides) if overrides else base
        model, tokenizer, name = load_model_and_tokenizer(model_name_or_path, config.torch_dtype, config.device)
        return cls(model, tokenizer, config, name=name)

    def __repr__(self) -> str:
        return f"BlockRank(model={self.name!r}, scoring_layer={self.scoring_layer}/{self.num_layers}, mode={self.config.scoring_mode!r})"

    def layout(self, query: str, contents: list[str]) -> BlockLayout:
        """Tokenised, packed prompt for `query` over document `contents` (validated strings)."""
        prompt = tokenize_prompt(self.tokenizer, query, contents, self.config.max_block_tokens)
        if prompt.truncated_documents:
            warnings.warn(
                f"{len(prompt.truncated_documents)} of {len(contents)} documents exceed max_block_tokens="
                f"{self.config.max_block_tokens} and were truncated",
                stacklevel=4,
            )
        offset = self.config.resolved_query_position_offset(len(prompt.prefix))
        last_document_position = len(prompt.prefix) + max((len(doc) for doc in prompt.documents), default=0)
        if offset < last_document_position and self.config.scoring_mode != "full":
            warnings.warn(
                f"query_position_offset={offset} falls inside the documents' positions (up to {last_document_position - 1}); "
                f"the query block then shares position ids with document tokens. Use an offset >= prefix + max_block_tokens",
                stacklevel=4,
            )
        return build_layout(prompt, query_position_offset=offset, causal_positions=self.config.scoring_mode == "full")

    def scoring_state(self, layout: BlockLayout) -> ScoringState:
        """Run the model over `layout` up to layer L* (or to the end when early_exit is off)."""
        plan = plan_attention(layout, self.config.batch_tokens, self.device)
        with self._lock, torch.inference_mode():
            return run_to_scoring_layer(
                self.model, plan, self.scoring_layer, self.config.num_signal_tokens, self.backend, self.config.early_exit
            )

    def execution_plan(self, layout: BlockLayout) -> ExecutionPlan:
        """One shot or chunked for `layout` under `memory_budget_mb`; only "blockrank" scoring with early exit can chunk."""
        budget = self.config.memory_budget_mb
        if self.config.scoring_mode == "blockrank" and self.config.early_exit:
            return plan_execution(layout, self.shape, budget)
        plan = plan_execution(layout, self.shape, None)
        if budget is not None and plan.estimated_bytes > budget * MB:
            logger.warning(
                "scoring_mode=%r (early_exit=%s) cannot run chunked: ~%.0f MB for %d tokens exceeds memory_budget_mb=%s",
                self.config.scoring_mode, self.config.early_exit, plan.estimated_bytes / MB, layout.num_tokens, budget,
            )
        return plan

    def score_layout(self, layout: BlockLayout) -> torch.Tensor:
        """Scores (N,) of the documents of `layout`, in input order, fp32, summing to 1 (ICR: calibrated mass)."""
        if self.config.scoring_mode == "icr":
            return self.score_layout_icr(layout)
        plan = self.execution_plan(layout)
        if plan.chunked:
            logger.info(
                "%d tokens exceed memory_budget_mb=%s: chunks of %d document tokens%s",
                layout.num_tokens, self.config.memory_budget_mb, plan.chunk_tokens, ", hidden states spilled to disk" if plan.spill else "",
            )
            with self._lock, torch.inference_mode():
                scores = chunked_scores(
                    self.model, layout, self.scoring_layer, self.config.num_signal_tokens, plan.chunk_tokens,
                    spill=plan.spill, max_rows=self.config.batch_tokens,
                ).cpu()
            return self.checked(scores)
        state = self.scoring_state(layout)
        _, owner = layout.document_rows()
        if self.backend == "triton":  # fused readout: never forms the (H, S, Dtok) probabilities
            from .kernels.score_readout import fused_document_scores

            owner = owner.to(state.document_keys.device)
            scores = fused_document_scores(state.signal_queries, state.document_keys, owner, layout.num_documents, state.scale).cpu()
        else:
            attention = signal_attention(state.signal_queries, state.document_keys, state.scale)  # (H, S, Dtok)
            scores = document_scores(attention, owner, layout.num_documents).cpu()
        return self.checked(scores)

    def checked(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores`, or FloatingPointError when any is NaN or infinite (an overflow in a low-precision dtype)."""
        if not torch.isfinite(scores).all():
            raise FloatingPointError(f"non-finite scores from {self.name} in {self.config.dtype}; try dtype='float32'")
        return scores

    def score_layout_icr(self, layout: BlockLayout) -> torch.Tensor:
        """ICR scores (N,) of `layout`: every layer, real and "N/A" query blocks over shared documents (icr.py)."""
        self.execution_plan(layout)  # logs when the call exceeds memory_budget_mb (ICR cannot chunk)
        plan = plan_attention(layout, self.config.batch_tokens, self.device)
        calibration = calibration_block(self.tokenizer, self.config.max_block_tokens)
        with self._lock, torch.inference_mode():
            tokens = icr_token_scores(self.model, plan, calibration, self.backend)
        return self.checked(calibrated_document_scores(tokens, layout.num_documents).cpu())

    def score(self, query: str, documents: Sequence[DocumentInput]) -> list[float]:
        """Scores in input order ([] for no documents): shares in [0, 1] summing to 1; ICR mode: calibrated attention mass.

        Identical contents are put in the prompt once and every copy gets that document's score (then
        renormalised so one call's shares still sum to 1). More than `config.max_documents` documents: ValueError.
        """
        return self.score_contents(check_query(query), self.candidates(documents).contents)

    def candidates(self, documents: Sequence[DocumentInput]) -> Candidates:
        """`documents` validated and cleaned; ValueError when there are more than `config.max_documents`."""
        return check_documents(documents, self.config.max_documents)

    def score_contents(self, query: str, contents: list[str]) -> list[float]:
        """`score` for an already validated query and document contents."""
        unique, inverse = unique_contents(contents)
        if len(unique) < len(contents):
            logger.info("%d duplicate documents scored once each", len(contents) - len(unique))
        if len(unique) <= 1:
            shares = torch.ones(len(unique))
        else:
            shares = self.score_layout(self.layout(query, unique))
        scores = shares[torch.tensor(inverse, dtype=torch.long)] if contents else shares[:0]
        if len(unique) < len(contents) and self.config.scoring_mode != "icr":
            scores = scores / scores.sum()
        return scores.tolist()

    def rerank(self, query: str, documents: Sequence[DocumentInput], top_k: Optional[int] = None) -> RankedList:
        """Documents best-first with scores. Documents are str or mappings with "text" (and "title", "id", ...)."""
        top_k = check_top_k(top_k)
        return self.rank_candidates(check_query(query), self.candidates(documents), top_k)

    def rank_candidates(self, query: str, candidates: Candidates, top_k: Optional[int]) -> RankedList:
        """`rerank` for an already validated query, candidates and top_k."""
        scores = self.score_contents(query, candidates.contents)
        return rank_documents(query, scores, candidates.contents, candidates.ids, candidates.metadata, top_k)

    def rerank_batch(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[DocumentInput]],
        top_k: Optional[int] = None,
        show_progress_bar: Optional[bool] = None,
    ) -> list[RankedList]:
        """`rerank` for each (query, documents) pair; a progress bar shows at INFO level or when asked.

        Every input is validated before the first query runs, so a bad item fails the call before any work
        is done (and none is thrown away); a str `queries` is a TypeError, not one query per character.
        """
        top_k = check_top_k(top_k)
        checked_queries = check_queries(queries)
        if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of document lists, got {type(documents).__name__}")
        if len(checked_queries) != len(documents):
            raise ValueError(f"got {len(checked_queries)} queries but {len(documents)} document lists")
        candidates = [self.batch_candidates(docs, number) for number, docs in enumerate(documents)]
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        pairs = tqdm(list(zip(checked_queries, candidates)), desc="Reranking", unit="query", disable=not show_progress_bar)
        return [self.rank_candidates(query, docs, top_k) for query, docs in pairs]

    def batch_candidates(self, documents: Sequence[DocumentInput], number: int) -> Candidates:
        """`candidates` for the `number`-th list of a batch, its errors naming the list."""
        try:
            return self.candidates(documents)
        except (TypeError, ValueError) as error:
            raise type(error)(f"documents[{number}]: {error}") from None


__all__ = ["BlockRank", "EMBEDDED_DEFAULT"]

"""The BlockRank reranker: one object, one obvious call (`rerank`), a batch call with a progress bar."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .base import Reranker
from .config import BlockRankConfig
from .engine import Engine
from .loading import EMBEDDED_DEFAULT, hold_linear_weights_in, load_model_and_tokenizer, model_settings


class BlockRank(Reranker):
    """Ranks candidate documents for a query by the attention a causal LM pays them at layer L*.

    What users call: `from_pretrained`, `rerank`, `rerank_batch`, `score` and `config`. The model, its
    settings resolved (L*, backend, scoring mode) and the scoring walk live in `engine` (`engine.Engine`).

    Example:
        >>> ranker = BlockRank.from_pretrained()          # embedded SmolLM2-135M + BlockRank adapter, offline
        >>> ranker.rerank("what is a cat", ["Cats are felines.", "Stocks fell."], top_k=1)[0].index
    """

    def __init__(
        self, model: Any, tokenizer: Any, config: Optional[BlockRankConfig] = None, *, name: str = "custom"
    ) -> None:
        self.engine = Engine(model, tokenizer, config or BlockRankConfig(), name)

    @classmethod
    def from_pretrained(
        cls, model_name_or_path: Optional[str] = None, *, config: Optional[BlockRankConfig] = None, **overrides: Any
    ) -> "BlockRank":
        """Load a Llama/Mistral/Qwen2/Qwen3-family causal LM by id or path (None: the embedded offline default).

        Settings known for a released checkpoint (e.g. L*=20 for quicktensor/blockrank-msmarco-mistral-7b) or
        stored in a `blockrank train` checkpoint apply first; `config` and keyword `overrides` (any
        BlockRankConfig field) win over them.
        """
        base = config or BlockRankConfig(**model_settings(model_name_or_path))
        config = base.replace(**overrides) if overrides else base
        model, tokenizer, name = load_model_and_tokenizer(model_name_or_path, config.torch_dtype, config.device)
        if config.autocast_dtype is not None:  # the engine runs it under autocast (engine.precision()): cast once
            hold_linear_weights_in(model, config.autocast_dtype)
        return cls(model, tokenizer, config, name=name)

    @property
    def config(self) -> BlockRankConfig:
        """The validated, frozen settings this ranker runs with."""
        return self.engine.config

    @property
    def max_documents(self) -> Optional[int]:  # type: ignore[override]
        return self.engine.config.max_documents

    def __repr__(self) -> str:
        engine = self.engine
        return (
            f"BlockRank(model={engine.name!r}, scoring_layer={engine.scoring_layer}/{engine.num_layers}, "
            f"mode={engine.config.scoring_mode!r})"
        )

    def score_contents(self, query: str, contents: list[str]) -> list[float]:
        """Scores of validated `contents`: shares in [0, 1] summing to 1 (ICR: calibrated attention mass); copies
        share a score."""
        return self.engine.document_scores(query, contents).scores

    def score_with_relevance(self, query: str, contents: list[str]) -> tuple[list[float], Optional[list[float]]]:
        """Shares and calibrated relevance scores of validated `contents`, read in the same forward."""
        scored = self.engine.document_scores(query, contents)
        return scored.scores, scored.relevance

    def score_batch_with_relevance(
        self, requests: Sequence[tuple[str, list[str]]]
    ) -> list[tuple[list[float], Optional[list[float]]]]:
        """`score_with_relevance` of each request; prompts that fit `max_pack_tokens` together run in one forward."""
        return [(scored.scores, scored.relevance) for scored in self.engine.document_scores_batch(requests)]


__all__ = ["BlockRank", "EMBEDDED_DEFAULT"]

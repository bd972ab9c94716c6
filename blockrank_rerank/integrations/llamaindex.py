"""LlamaIndex node postprocessor: `BlockRankReranker`, a thin translation to and from `BlockRank.rerank`.

    from blockrank_rerank.integrations.llamaindex import BlockRankReranker
    engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[BlockRankReranker(top_n=5)])

Needs `pip install "blockrank-rerank[llamaindex]"` (llama-index-core 0.14).
"""

from typing import Any, Dict, List, Optional

from blockrank_rerank.config import BlockRankConfig
from blockrank_rerank.inputs import check_score_threshold
from blockrank_rerank.loading import EMBEDDED_DEFAULT
from blockrank_rerank.reranker import BlockRank

from ._shared import (
    check_model_available,
    check_ranker_arguments,
    config_fields,
    missing_framework,
    resolve_config,
    shared_ranker,
)

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as error:
    raise missing_framework("llama-index-core", "llamaindex") from error

dispatcher = get_dispatcher(__name__)


class BlockRankReranker(BaseNodePostprocessor):
    """Reorders retrieved nodes by BlockRank score and keeps `top_n` (scores: floats in [0, 1], one call's summing
    to 1; ICR mode: calibrated attention mass). Each returned node is a copy whose metadata holds
    "relevance_score", the calibrated per-document relevance in [0, 1] that `score_threshold` filters on (kept out
    of the text embedded or sent to the LLM).

    Pass a ready `ranker` to share one loaded model, or `model` (None: the embedded offline default),
    `scoring_mode` (a name of `blockrank_rerank.modes.SCORING_MODES`: "blockrank", "full", "icr") and `config`
    (any other `BlockRankConfig` fields); the model then loads on the first query and is shared with every
    adapter asking for the same model and config.
    """

    top_n: int = Field(default=5, ge=1, description="Number of nodes to return, best first.")
    model: Optional[str] = Field(default=None, description="Model id or path; None: the embedded default.")
    scoring_mode: Optional[str] = Field(default=None, description="BlockRankConfig.scoring_mode override.")
    config: Dict[str, Any] = Field(default_factory=dict, description="Other BlockRankConfig fields.")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Node metadata included in the scored text."
    )
    device: Optional[str] = Field(default=None, description="Torch device; None: the config's, else auto.")
    keep_retrieval_score: bool = Field(
        default=False, description="Keep each node's incoming score in its metadata as 'retrieval_score'."
    )
    score_threshold: Optional[float] = Field(
        default=None, description="Drop nodes whose relevance_score is below this; None keeps them all."
    )
    metadata_fields_to_embed: Optional[List[str]] = Field(
        default=None,
        description=(
            "Metadata keys whose values are scored as the node's title before its text, as the LangChain and "
            "Haystack adapters do (the same documents then rank the same in all three); None: `metadata_mode`."
        ),
    )

    _ranker: Optional[BlockRank] = PrivateAttr(default=None)
    _config: BlockRankConfig = PrivateAttr()

    def __init__(
        self,
        *,
        top_n: int = 5,
        ranker: Optional[BlockRank] = None,
        model: Optional[str] = None,
        scoring_mode: Optional[str] = None,
        config: Optional[Dict[str, Any]] = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        device: Optional[str] = None,
        keep_retrieval_score: bool = False,
        score_threshold: Optional[float] = None,
        metadata_fields_to_embed: Optional[List[str]] = None,
        callback_manager: Optional[CallbackManager] = None,
    ) -> None:
        check_ranker_arguments(ranker, model, scoring_mode, config, device)
        check_model_available(model)
        resolved = ranker.config if ranker is not None else resolve_config(model, scoring_mode, config, device)
        super().__init__(
            top_n=top_n,
            model=ranker.engine.name if ranker is not None else model,
            scoring_mode=scoring_mode,
            config=config_fields(ranker.config) if ranker is not None else dict(config or {}),
            metadata_mode=metadata_mode,
            device=device,
            keep_retrieval_score=keep_retrieval_score,
            score_threshold=check_score_threshold(score_threshold),
            metadata_fields_to_embed=None if metadata_fields_to_embed is None else list(metadata_fields_to_embed),
            callback_manager=callback_manager or CallbackManager(),
        )
        self._ranker = ranker
        self._config = resolved

    @classmethod
    def class_name(cls) -> str:
        return "BlockRankReranker"

    @property
    def ranker(self) -> BlockRank:
        """The shared `BlockRank`, loaded on first use."""
        if self._ranker is None:
            self._ranker = shared_ranker(self.model, self._config)
        return self._ranker

    def _postprocess_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None
    ) -> List[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("BlockRankReranker needs a query: pass query_bundle or query_str")
        model_name = self.model or EMBEDDED_DEFAULT
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=model_name))
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        texts = [self._content(n) for n in nodes]
        payload = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: model_name,
            EventPayload.QUERY_STR: query_bundle.query_str,
            EventPayload.TOP_K: self.top_n,
        }
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            ranked = self.ranker.rerank(
                query_bundle.query_str, texts, top_k=self.top_n, score_threshold=self.score_threshold
            )
            reranked = [
                NodeWithScore(node=self._output_node(nodes[d.index], d.thresholded_score), score=float(d.score))
                for d in ranked
            ]
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    def _content(self, scored: NodeWithScore) -> Any:
        """What is scored: the node's text with `metadata_mode`'s metadata, or with `metadata_fields_to_embed` its
        bare text titled by those fields' values."""
        if self.metadata_fields_to_embed is None:
            return scored.node.get_content(metadata_mode=self.metadata_mode)
        metadata = scored.node.metadata
        title = " ".join(str(metadata[k]) for k in self.metadata_fields_to_embed if metadata.get(k) not in (None, ""))
        text = scored.node.get_content(metadata_mode=MetadataMode.NONE)
        return {"text": text, "title": title} if title else text

    def _output_node(self, scored: NodeWithScore, relevance: float) -> Any:
        """A copy of the node whose metadata holds "relevance_score" and, with `keep_retrieval_score`, the incoming
        score as "retrieval_score", both kept out of the text embedded or sent to the LLM."""
        node = scored.node.model_copy(deep=True)
        added = {"relevance_score": relevance}
        if self.keep_retrieval_score:
            added["retrieval_score"] = scored.score
        node.metadata.update(added)
        for excluded in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
            excluded.extend(key for key in added if key not in excluded)
        return node


__all__ = ["BlockRankReranker"]

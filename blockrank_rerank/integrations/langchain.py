"""LangChain document compressor: `BlockRankRerank`, a thin translation to and from `BlockRank.rerank`.

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from blockrank_rerank.integrations.langchain import BlockRankRerank
    retriever = ContextualCompressionRetriever(base_compressor=BlockRankRerank(top_n=5), base_retriever=base)

Needs `pip install "blockrank-rerank[langchain]"` (langchain-core 1.x).
"""

from typing import Any, Dict, List, Optional, Sequence

from blockrank_rerank.config import BlockRankConfig
from blockrank_rerank.inputs import check_score_threshold
from blockrank_rerank.reranker import BlockRank

from ._shared import (
    check_model_available,
    check_ranker_arguments,
    missing_framework,
    resolve_config,
    shared_ranker,
)

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.runnables.config import run_in_executor
    from pydantic import ConfigDict, Field, PrivateAttr
except ImportError as error:
    raise missing_framework("langchain-core", "langchain") from error


class BlockRankRerank(BaseDocumentCompressor):
    """Reorders documents by BlockRank score (its share of the attention, in `metadata["blockrank_share"]`, one
    call's shares summing to 1), keeps `top_n` (None: all) and puts the calibrated per-document relevance in
    `metadata["relevance_score"]` (in [0, 1], as Cohere's; ICR mode: the calibrated attention mass), which
    `score_threshold` filters on. Inputs are not modified.

    Pass a ready `ranker` to share one loaded model, or `model` (None: the embedded offline default),
    `scoring_mode` (a name of `blockrank_rerank.modes.SCORING_MODES`: "blockrank", "full", "icr") and `config`
    (any other `BlockRankConfig` fields); the model then loads on the first call and is shared with every
    adapter asking for the same model and config.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    top_n: Optional[int] = Field(default=3, ge=1)
    """Number of documents to return, best first; None keeps them all."""
    ranker: Optional[BlockRank] = Field(default=None, exclude=True, repr=False)
    """A ready BlockRank to use; when None one is loaded from `model` on first use."""
    model: Optional[str] = None
    """Model id or path; None: the embedded offline default."""
    scoring_mode: Optional[str] = None
    """BlockRankConfig.scoring_mode override (a name of `blockrank_rerank.modes.SCORING_MODES`)."""
    config: Dict[str, Any] = Field(default_factory=dict)
    """Other BlockRankConfig fields."""
    device: Optional[str] = None
    """Torch device ("cpu", "cuda", "cuda:1"); None: the config's, else auto (cuda, then mps, then cpu)."""
    score_threshold: Optional[float] = None
    """Drop documents whose relevance_score is below this; None keeps them all."""
    metadata_fields_to_embed: List[str] = Field(default_factory=list)
    """Metadata keys whose values join the scored text as its title (as Haystack's `meta_fields_to_embed`);
    empty: `page_content` alone."""

    _config: BlockRankConfig = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self.score_threshold = check_score_threshold(self.score_threshold)
        check_ranker_arguments(self.ranker, self.model, self.scoring_mode, self.config, self.device)
        check_model_available(self.model if self.ranker is None else None)
        self._config = (
            self.ranker.config
            if self.ranker is not None
            else resolve_config(self.model, self.scoring_mode, self.config, self.device)
        )

    def _get_ranker(self) -> BlockRank:
        if self.ranker is None:
            self.ranker = shared_ranker(self.model, self._config)
        return self.ranker

    def _content(self, document: Document) -> Any:
        """What is scored: `page_content`, titled by the values of `metadata_fields_to_embed` when any is set."""
        title = " ".join(
            str(document.metadata[k])
            for k in self.metadata_fields_to_embed
            if document.metadata.get(k) not in (None, "")
        )
        return {"text": document.page_content, "title": title} if title else document.page_content

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Optional[Callbacks] = None
    ) -> Sequence[Document]:
        """Copies of `documents`, best first, cut to `top_n` and `score_threshold`, each with
        `metadata["relevance_score"]` and `metadata["blockrank_share"]`."""
        if not documents:
            return []
        contents = [self._content(d) for d in documents]
        ranked = self._get_ranker().rerank(query, contents, top_k=self.top_n, score_threshold=self.score_threshold)
        return [
            documents[d.index].model_copy(
                update={
                    "metadata": {
                        **documents[d.index].metadata,
                        "relevance_score": d.thresholded_score,
                        "blockrank_share": float(d.score),
                    }
                }
            )
            for d in ranked
        ]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Optional[Callbacks] = None
    ) -> Sequence[Document]:
        """`compress_documents` in a worker thread, so the forward pass never blocks the event loop."""
        return await run_in_executor(None, self.compress_documents, documents, query, callbacks)


__all__ = ["BlockRankRerank"]

"""Haystack component: `BlockRankRanker`, a thin translation to and from `BlockRank.rerank`.

    from blockrank_rerank.integrations.haystack import BlockRankRanker
    pipeline.add_component("ranker", BlockRankRanker(top_k=5))

Works with haystack-ai 2.x and 3.x; needs `pip install "blockrank-rerank[haystack]"`. Haystack 3 loads
classes only from trusted modules, so load a serialised pipeline with
`Pipeline.loads(yaml, allowed_modules=["blockrank_rerank"])` or set
`HAYSTACK_DESERIALIZATION_ALLOWLIST=blockrank_rerank`.
"""

import asyncio
import dataclasses
from typing import Any, Dict, List, Optional, Union

from blockrank_rerank.config import BlockRankConfig
from blockrank_rerank.inputs import check_score_threshold, check_top_k
from blockrank_rerank.reranker import BlockRank

from ._shared import (
    check_ranker_arguments,
    config_fields,
    missing_framework,
    resolve_config,
    shared_ranker,
)

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.utils import ComponentDevice
except ImportError as error:
    raise missing_framework("haystack-ai", "haystack") from error


@component
class BlockRankRanker:
    """Ranks Documents by BlockRank score and returns scored copies (`Document.score`, a float in [0, 1]
    summing to 1 over one call; ICR mode: calibrated attention mass), best first, cut to `top_k`, each with
    `meta["relevance_score"]`, the calibrated per-document relevance in [0, 1] that `score_threshold` filters on
    (documents below it are dropped). Inputs are never modified.

    Pass a ready `ranker` to share one loaded model, or `model` (None: the embedded offline default),
    `scoring_mode` (a name of `blockrank_rerank.modes.SCORING_MODES`: "blockrank", "full", "icr") and `config`
    (any other `BlockRankConfig` fields); the model loads in `warm_up()` (or the first `run`) and is shared with
    every component asking for the same model and config. `meta_fields_to_embed` names meta fields scored as a
    title before the content.
    """

    def __init__(
        self,
        *,
        model: Optional[str] = None,
        top_k: Optional[int] = 10,
        scoring_mode: Optional[str] = None,
        config: Optional[Dict[str, Any]] = None,
        meta_fields_to_embed: Optional[List[str]] = None,
        ranker: Optional[BlockRank] = None,
        device: Optional[Union[str, "ComponentDevice"]] = None,
        score_threshold: Optional[float] = None,
    ) -> None:
        if device is not None and not isinstance(device, str):  # haystack.utils.ComponentDevice, as its rankers take
            device = device.to_torch_str()
        check_ranker_arguments(ranker, model, scoring_mode, config, device)
        self.device = device
        self.top_k = check_top_k(top_k)
        self.score_threshold = check_score_threshold(score_threshold)
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.model = ranker.engine.name if ranker is not None else model
        self.scoring_mode = scoring_mode
        self.config = config_fields(ranker.config) if ranker is not None else dict(config or {})
        self._config: BlockRankConfig = (
            ranker.config if ranker is not None else resolve_config(model, scoring_mode, config, device)
        )
        self._ranker = ranker

    def warm_up(self) -> None:
        """Load (or reuse) the shared model; calling it again does nothing."""
        self._get_ranker()

    @property
    def ranker(self) -> BlockRank:
        """The shared `BlockRank` (loaded on first use), e.g. to generate with its model."""
        return self._get_ranker()

    def _get_ranker(self) -> BlockRank:
        if self._ranker is None:
            self._ranker = shared_ranker(self.model, self._config)
        return self._ranker

    def to_dict(self) -> Dict[str, Any]:
        """Every init argument except a live `ranker`, which is stored as its model name and full config."""
        return default_to_dict(
            self,
            model=self.model,
            top_k=self.top_k,
            scoring_mode=self.scoring_mode,
            config=self.config,
            meta_fields_to_embed=self.meta_fields_to_embed,
            device=self.device,
            score_threshold=self.score_threshold,
        )

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BlockRankRanker":
        return default_from_dict(cls, data)

    def _content(self, document: Document) -> Dict[str, str]:
        if not isinstance(document.content, str):
            raise ValueError(f"BlockRankRanker needs text: Document {document.id} has content={document.content!r}")
        title = " ".join(
            str(document.meta[k]) for k in self.meta_fields_to_embed if document.meta.get(k) not in (None, "")
        )
        return {"text": document.content, "title": title}

    @component.output_types(documents=List[Document])
    def run(
        self,
        query: str,
        documents: List[Document],
        top_k: Optional[int] = None,
        score_threshold: Optional[float] = None,
    ) -> Dict[str, List[Document]]:
        """Scored copies of `documents`, best first; `top_k` and `score_threshold` (else the init values; None:
        all) cap the count."""
        top_k = self.top_k if top_k is None else check_top_k(top_k)
        threshold = self.score_threshold if score_threshold is None else check_score_threshold(score_threshold)
        if not documents:
            return {"documents": []}
        contents = [self._content(d) for d in documents]
        ranked = self._get_ranker().rerank(query, contents, top_k=top_k, score_threshold=threshold)
        return {
            "documents": [
                dataclasses.replace(
                    documents[d.index],
                    score=float(d.score),
                    meta={**documents[d.index].meta, "relevance_score": d.thresholded_score},
                )
                for d in ranked
            ]
        }

    @component.output_types(documents=List[Document])
    async def run_async(
        self,
        query: str,
        documents: List[Document],
        top_k: Optional[int] = None,
        score_threshold: Optional[float] = None,
    ) -> Dict[str, List[Document]]:
        """`run` in a worker thread, so the forward pass never blocks the event loop (the model runs one call at
        a time)."""
        return await asyncio.to_thread(self.run, query, documents, top_k, score_threshold)


__all__ = ["BlockRankRanker"]

"""LlamaIndex adapter inside a real query engine, on the embedded default model: same ranking as the core object.

What all three adapters share (inputs, caps, errors, async, ICR, the missing extra): test_adapter_contract.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler  # noqa: E402
from llama_index.core.embeddings import MockEmbedding  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.event_handlers import BaseEventHandler  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from blockrank_rerank import BlockRankConfig  # noqa: E402
from blockrank_rerank.evaluation.demo_corpus import DEMO_QUERIES  # noqa: E402
from blockrank_rerank.integrations.llamaindex import BlockRankReranker  # noqa: E402

QUERY = DEMO_QUERIES[0]["query"]
TEXTS = DEMO_QUERIES[0]["documents"]


def _nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(id_=f"n{i}", text=t), score=0.5) for i, t in enumerate(TEXTS)]


class _Recorder(BaseEventHandler):
    events: list = []

    def handle(self, event, **kwargs):
        self.events.append(event)


def test_query_engine_ranks_like_the_core_object(default_ranker):
    index = VectorStoreIndex(
        [TextNode(id_=f"n{i}", text=t) for i, t in enumerate(TEXTS)], embed_model=MockEmbedding(embed_dim=8)
    )
    retrieved = index.as_retriever(similarity_top_k=len(TEXTS)).retrieve(QUERY)
    expected = default_ranker.rerank(QUERY, [n.node.get_content() for n in retrieved], top_k=3)

    engine = index.as_query_engine(
        llm=MockLLM(),
        similarity_top_k=len(TEXTS),
        node_postprocessors=[BlockRankReranker(ranker=default_ranker, top_n=3)],
    )
    sources = engine.query(QUERY).source_nodes

    assert [n.node.node_id for n in sources] == [retrieved[d.index].node.node_id for d in expected]
    assert all(type(n.score) is float for n in sources)
    assert [n.score for n in sources] == pytest.approx([d.score for d in expected], abs=1e-6)


def test_rerank_fires_start_and_end_events_and_one_callback_pair(default_ranker):
    debug = LlamaDebugHandler()
    recorder = _Recorder(events=[])
    dispatcher = get_dispatcher("blockrank_rerank.integrations.llamaindex")
    dispatcher.add_event_handler(recorder)
    try:
        reranker = BlockRankReranker(ranker=default_ranker, top_n=2, callback_manager=CallbackManager([debug]))
        out = reranker.postprocess_nodes(_nodes(), query_str=QUERY)
    finally:
        dispatcher.event_handlers.remove(recorder)
    assert len(out) == 2
    names = [e.class_name() for e in recorder.events]
    assert names == ["ReRankStartEvent", "ReRankEndEvent"]
    assert recorder.events[0].top_n == 2 and recorder.events[1].nodes == out
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1 and len(pairs[0]) == 2


def test_missing_query_is_a_value_error_and_a_query_bundle_is_accepted(default_ranker):
    reranker = BlockRankReranker(ranker=default_ranker)
    with pytest.raises(ValueError, match="query"):
        reranker.postprocess_nodes(_nodes())
    big = BlockRankReranker(ranker=default_ranker, top_n=50)
    assert len(big.postprocess_nodes(_nodes(), query_bundle=QueryBundle(QUERY))) == len(TEXTS)
    assert BlockRankReranker.class_name() == "BlockRankReranker"


def test_model_is_loaded_once_and_shared(default_ranker):
    wrapped = BlockRankReranker(ranker=default_ranker).to_dict()  # also registers it as the shared default
    assert wrapped["class_name"] == "BlockRankReranker" and wrapped["model"] == default_ranker.engine.name
    assert BlockRankConfig(**wrapped["config"]) == default_ranker.config
    lazy = BlockRankReranker(top_n=2)
    assert lazy._ranker is None  # nothing loads at construction
    assert lazy.ranker is default_ranker  # the property loads (here: finds) the shared ranker


def test_keep_retrieval_score_keeps_the_incoming_score_in_a_copy(default_ranker):
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from blockrank_rerank.integrations.llamaindex import BlockRankReranker

    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.5 - i / 10)
        for i, t in enumerate(["Stocks fell on Monday.", "The Moon's gravity causes the tides.", "Chess openings."])
    ]
    kept = BlockRankReranker(ranker=default_ranker, top_n=3, keep_retrieval_score=True).postprocess_nodes(
        nodes, query_str="what causes tides"
    )
    plain = BlockRankReranker(ranker=default_ranker, top_n=3).postprocess_nodes(nodes, query_str="what causes tides")
    assert [n.node.node_id for n in kept] == [n.node.node_id for n in plain]
    incoming = {n.node.node_id: n.score for n in nodes}
    assert all(n.node.metadata["retrieval_score"] == incoming[n.node.node_id] for n in kept)
    assert all("retrieval_score" not in n.node.metadata for n in nodes + plain)  # the caller's nodes untouched
    assert all("retrieval_score" not in n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in kept)

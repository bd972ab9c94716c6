"""LangChain adapter inside a real ContextualCompressionRetriever, on the embedded default model.

What all three adapters share (inputs, caps, errors, async, ICR, the missing extra): test_adapter_contract.py.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_classic")

from langchain_classic.retrievers import ContextualCompressionRetriever  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from blockrank_rerank.evaluation.demo_corpus import DEMO_QUERIES  # noqa: E402
from blockrank_rerank.integrations.langchain import BlockRankRerank  # noqa: E402
from conftest import assert_event_loop_was_free, gather_beside_ticker  # noqa: E402

QUERY = DEMO_QUERIES[0]["query"]
TEXTS = DEMO_QUERIES[0]["documents"]


def _documents() -> list[Document]:
    return [Document(id=f"d{i}", page_content=t, metadata={"source": "demo", "n": i}) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def base_retriever():
    store = InMemoryVectorStore(embedding=DeterministicFakeEmbedding(size=16))
    store.add_documents(_documents())
    return store.as_retriever(search_kwargs={"k": len(TEXTS)})


def test_compression_retriever_ranks_like_the_core_object(default_ranker, base_retriever):
    retrieved = base_retriever.invoke(QUERY)
    expected = default_ranker.rerank(QUERY, [d.page_content for d in retrieved], top_k=3)
    retriever = ContextualCompressionRetriever(
        base_compressor=BlockRankRerank(ranker=default_ranker, top_n=3), base_retriever=base_retriever
    )

    out = retriever.invoke(QUERY)

    assert [d.id for d in out] == [retrieved[d.index].id for d in expected]
    assert all(type(d.metadata["relevance_score"]) is float for d in out)
    assert [d.metadata["blockrank_share"] for d in out] == pytest.approx([d.score for d in expected], abs=1e-6)
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx(
        [d.relevance_score for d in expected], abs=1e-6
    )
    assert all(d.metadata["source"] == "demo" for d in out)  # the caller's metadata is kept


def test_async_matches_sync_and_leaves_the_event_loop_free(default_ranker, base_retriever):
    compressor = BlockRankRerank(ranker=default_ranker, top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base_retriever)
    sync_ids = [d.id for d in retriever.invoke(QUERY)]

    results, ticks, elapsed = asyncio.run(gather_beside_ticker([retriever.ainvoke(QUERY)]))
    out = results[0]
    assert [d.id for d in out] == sync_ids
    assert_event_loop_was_free(ticks, elapsed)


def test_metadata_fields_join_the_scored_text_as_haystack_and_llamaindex_do(default_ranker):
    from haystack import Document as HaystackDocument
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from blockrank_rerank.integrations.llamaindex import BlockRankReranker

    from blockrank_rerank.integrations.haystack import BlockRankRanker
    from blockrank_rerank.integrations.langchain import BlockRankRerank

    texts = ["It covers the gravity of the Moon.", "It covers stock markets.", "It covers chess openings."]
    titles = ["Chess", "Ocean tides", "Finance"]
    query = "what causes ocean tides"
    chain = BlockRankRerank(ranker=default_ranker, top_n=3, metadata_fields_to_embed=["title"])
    ranked = chain.compress_documents(
        [Document(page_content=t, metadata={"title": h, "i": i}) for i, (t, h) in enumerate(zip(texts, titles))], query
    )
    haystack = BlockRankRanker(ranker=default_ranker, top_k=3, meta_fields_to_embed=["title"]).run(
        query, [HaystackDocument(content=t, meta={"title": h, "i": i}) for i, (t, h) in enumerate(zip(texts, titles))]
    )["documents"]
    llama = BlockRankReranker(ranker=default_ranker, top_n=3, metadata_fields_to_embed=["title"]).postprocess_nodes(
        [
            NodeWithScore(node=TextNode(text=t, metadata={"title": h, "i": i}))
            for i, (t, h) in enumerate(zip(texts, titles))
        ],
        query_str=query,
    )
    assert [d.metadata["i"] for d in ranked] == [d.meta["i"] for d in haystack] == [n.node.metadata["i"] for n in llama]
    assert [n.score for n in llama] == pytest.approx([d.score for d in haystack], abs=1e-6)
    assert [d.metadata["blockrank_share"] for d in ranked] == pytest.approx([d.score for d in haystack], abs=1e-6)
    assert [d.metadata["relevance_score"] for d in ranked] == pytest.approx(
        [d.meta["relevance_score"] for d in haystack], abs=1e-6
    )
    core = default_ranker.score(query, [{"text": t, "title": h} for t, h in zip(texts, titles)])
    assert sorted(core, reverse=True) == pytest.approx([d.metadata["blockrank_share"] for d in ranked], abs=1e-6)

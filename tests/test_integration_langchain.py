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
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([d.score for d in expected], abs=1e-6)
    assert all(d.metadata["source"] == "demo" for d in out)  # the caller's metadata is kept


def test_async_matches_sync_and_leaves_the_event_loop_free(default_ranker, base_retriever):
    compressor = BlockRankRerank(ranker=default_ranker, top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base_retriever)
    sync_ids = [d.id for d in retriever.invoke(QUERY)]

    results, ticks, elapsed = asyncio.run(gather_beside_ticker([retriever.ainvoke(QUERY)]))
    out = results[0]
    assert [d.id for d in out] == sync_ids
    assert_event_loop_was_free(ticks, elapsed)

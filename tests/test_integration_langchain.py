"""LangChain adapter inside a real ContextualCompressionRetriever, on the embedded default model."""

from __future__ import annotations

import asyncio
import importlib
import sys

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_classic")

from langchain_classic.retrievers import ContextualCompressionRetriever  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from blockrank_rerank import BlockRank, BlockRankConfig  # noqa: E402
from blockrank_rerank.demo_corpus import DEMO_QUERIES  # noqa: E402
from blockrank_rerank.integrations.langchain import BlockRankRerank  # noqa: E402
from blockrank_rerank.loading import model_settings  # noqa: E402
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
    retriever = ContextualCompressionRetriever(base_compressor=BlockRankRerank(ranker=default_ranker, top_n=3), base_retriever=base_retriever)

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


def test_top_n_ids_and_inputs_untouched(default_ranker):
    documents = _documents()
    out = BlockRankRerank(ranker=default_ranker, top_n=None).compress_documents(documents, QUERY)
    assert len(out) == len(TEXTS) and sorted(d.id for d in out) == sorted(d.id for d in documents)
    assert sum(d.metadata["relevance_score"] for d in out) == pytest.approx(1.0, abs=1e-5)
    assert all("relevance_score" not in d.metadata for d in documents)
    assert len(BlockRankRerank(ranker=default_ranker, top_n=2).compress_documents(documents, QUERY)) == 2


def test_empty_and_bad_inputs(default_ranker):
    compressor = BlockRankRerank(ranker=default_ranker)
    assert compressor.compress_documents([], QUERY) == []
    with pytest.raises(ValueError, match="query"):
        compressor.compress_documents(_documents(), "  ")
    with pytest.raises(ValidationError):
        BlockRankRerank(top_n=0)
    with pytest.raises(ValueError, match="scoring_mode"):
        BlockRankRerank(scoring_mode="nope")
    with pytest.raises(TypeError):
        BlockRankRerank(config={"no_such_field": 1})
    with pytest.raises(ValueError, match="either"):
        BlockRankRerank(ranker=default_ranker, scoring_mode="icr")


def test_lazy_shared_model_and_scoring_mode(default_ranker):
    BlockRankRerank(ranker=default_ranker)  # registers it as the shared default
    lazy = BlockRankRerank()
    assert lazy.ranker is None
    lazy.compress_documents(_documents()[:2], QUERY)
    assert lazy.ranker is default_ranker
    assert BlockRankRerank(scoring_mode="icr", config={"max_block_tokens": 128})._config == BlockRankConfig(**{**model_settings(None), "scoring_mode": "icr", "max_block_tokens": 128})


def test_icr_mode_reaches_the_core(default_ranker):
    icr = BlockRank(default_ranker.model, default_ranker.tokenizer, BlockRankConfig(scoring_mode="icr"))
    out = BlockRankRerank(ranker=icr, top_n=3).compress_documents(_documents(), QUERY)
    expected = icr.rerank(QUERY, TEXTS, top_k=3)
    assert [d.id for d in out] == [f"d{d.index}" for d in expected]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([d.score for d in expected], abs=1e-6)


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "blockrank_rerank.integrations.langchain")
    monkeypatch.setitem(sys.modules, "langchain_core.documents", None)
    with pytest.raises(ImportError, match=r'pip install "blockrank-rerank\[langchain\]"'):
        importlib.import_module("blockrank_rerank.integrations.langchain")

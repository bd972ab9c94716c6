"""The contract every framework adapter keeps (LangChain, LlamaIndex, Haystack), one parametrised suite.

Each framework has a small driver: how to build its adapter around a shared `BlockRank`, call it (sync and
async), read back ids and scores, what it answers for no documents and how it refuses a bad cap. A test here
runs once per framework and skips (pytest.importorskip) where that framework is not installed. What only one
framework has (pipelines, YAML, events and callbacks, ...) stays in its `test_integration_*.py`.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import sys
from typing import Any, Optional

import pytest
import torch

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank.evaluation.demo_corpus import DEMO_QUERIES
from blockrank_rerank.loading import model_settings
from conftest import assert_event_loop_was_free, concurrent_requests, gather_beside_ticker

QUERY = DEMO_QUERIES[0]["query"]
TEXTS = DEMO_QUERIES[0]["documents"]
# Two copies of one passage, two blank ones (both strip to ""), one other: docs/limits.md's duplicates rows.
DUPLICATES_QUERY = "why do cats purr"
DUPLICATES = ["Cats purr when content.", "  ", "Cats purr when content.", "Stocks fell sharply today.", "\n\t"]
CONCURRENT_REQUESTS = concurrent_requests()  # eight (query, 2-4 documents) pairs


class Driver:
    """What a test needs to know about one framework's adapter."""

    name: str
    requires: tuple[str, ...]  # importorskip targets
    module: str  # the adapter's module
    blocked: str  # a framework module the adapter imports: set to None in sys.modules, the import must fail
    extra: str  # the pip extra the ImportError must name
    cap: str  # the adapter's result-count argument
    keep_all: Any  # the cap value that keeps every document (None where the adapter accepts it)
    accepts_no_cap: bool  # whether cap=None means "all"
    empty: Any  # what the adapter returns for no documents
    bad_cap_error: type = ValueError

    def build(self, **kwargs: Any):
        raise NotImplementedError

    def documents(self, texts, prefix: str = "d") -> list:
        """Framework documents with ids `{prefix}{i}`, with a retrieval score or metadata the adapter must keep."""
        raise NotImplementedError

    def rerank(self, adapter, query: str, documents: list):
        raise NotImplementedError

    def arerank(self, adapter, query: str, documents: list):
        raise NotImplementedError

    def items(self, result) -> list:
        """The output documents of one call."""
        return result

    def id_and_score(self, item) -> tuple[str, float]:
        raise NotImplementedError

    def relevance(self, item) -> float:
        """The calibrated relevance score the adapter reports for one output document."""
        raise NotImplementedError

    def held(self, adapter) -> Optional[BlockRank]:
        """The ranker the adapter holds now, without loading one."""
        raise NotImplementedError

    def untouched(self, documents: list) -> bool:
        """The caller's documents still carry what `documents` gave them, and no BlockRank score."""
        raise NotImplementedError

    def ranked(self, result) -> list[tuple[str, float]]:
        return [self.id_and_score(item) for item in self.items(result)]


class LangChain(Driver):
    name, requires, module = "langchain", ("langchain_core",), "blockrank_rerank.integrations.langchain"
    blocked, extra = "langchain_core.documents", "langchain"
    cap, keep_all, accepts_no_cap, empty = "top_n", None, True, []

    def __init__(self) -> None:
        from langchain_core.documents import Document
        from pydantic import ValidationError

        from blockrank_rerank.integrations.langchain import BlockRankRerank

        self.Document, self.Adapter, self.bad_cap_error = Document, BlockRankRerank, ValidationError

    def build(self, **kwargs):
        return self.Adapter(**kwargs)

    def documents(self, texts, prefix="d"):
        return [
            self.Document(id=f"{prefix}{i}", page_content=t, metadata={"source": "demo", "n": i})
            for i, t in enumerate(texts)
        ]

    def rerank(self, adapter, query, documents):
        return adapter.compress_documents(documents, query)

    def arerank(self, adapter, query, documents):
        return adapter.acompress_documents(documents, query)

    def id_and_score(self, item):
        return item.id, item.metadata["blockrank_share"]

    def relevance(self, item):
        return item.metadata["relevance_score"]

    def held(self, adapter):
        return adapter.ranker

    def untouched(self, documents):
        return all("relevance_score" not in d.metadata and d.metadata["source"] == "demo" for d in documents)


class LlamaIndex(Driver):
    name, requires, module = "llamaindex", ("llama_index.core",), "blockrank_rerank.integrations.llamaindex"
    blocked, extra = "llama_index.core.postprocessor.types", "llamaindex"
    cap, keep_all, accepts_no_cap, empty = "top_n", 50, False, []  # top_n is an int: no None

    def __init__(self) -> None:
        from llama_index.core.schema import NodeWithScore, TextNode
        from pydantic import ValidationError

        from blockrank_rerank.integrations.llamaindex import BlockRankReranker

        self.NodeWithScore, self.TextNode = NodeWithScore, TextNode
        self.Adapter, self.bad_cap_error = BlockRankReranker, ValidationError

    def build(self, **kwargs):
        return self.Adapter(**kwargs)

    def documents(self, texts, prefix="d"):
        return [
            self.NodeWithScore(node=self.TextNode(id_=f"{prefix}{i}", text=t), score=0.5) for i, t in enumerate(texts)
        ]

    def rerank(self, adapter, query, documents):
        return adapter.postprocess_nodes(documents, query_str=query)

    def arerank(self, adapter, query, documents):
        return adapter.apostprocess_nodes(documents, query_str=query)

    def id_and_score(self, item):
        return item.node.node_id, item.score

    def relevance(self, item):
        return item.node.metadata["relevance_score"]

    def held(self, adapter):
        return adapter._ranker

    def untouched(self, documents):
        return all(n.score == 0.5 for n in documents)  # the caller's NodeWithScore objects keep their retrieval scores


class Haystack(Driver):
    name, requires, module = "haystack", ("haystack",), "blockrank_rerank.integrations.haystack"
    blocked, extra = "haystack", "haystack"
    cap, keep_all, accepts_no_cap, empty = "top_k", None, True, {"documents": []}

    def __init__(self) -> None:
        from haystack import Document

        from blockrank_rerank.integrations.haystack import BlockRankRanker

        self.Document, self.Adapter = Document, BlockRankRanker

    def build(self, **kwargs):
        return self.Adapter(**kwargs)

    def documents(self, texts, prefix="d"):
        return [self.Document(id=f"{prefix}{i}", content=t, score=0.5) for i, t in enumerate(texts)]

    def rerank(self, adapter, query, documents):
        return adapter.run(query, documents)

    def arerank(self, adapter, query, documents):
        return adapter.run_async(query, documents)

    def items(self, result):
        return result["documents"]

    def id_and_score(self, item):
        return item.id, item.score

    def relevance(self, item):
        return item.meta["relevance_score"]

    def held(self, adapter):
        return adapter._ranker

    def untouched(self, documents):
        return all(d.score == 0.5 for d in documents)


@pytest.fixture(params=[LangChain, LlamaIndex, Haystack], ids=lambda d: d.name)
def driver(request) -> Driver:
    for module in request.param.requires:
        pytest.importorskip(module)
    return request.param()


def build(driver: Driver, cap: Any = "default", **kwargs: Any):
    """The adapter with `cap` under the framework's own name for it (`top_n` / `top_k`)."""
    return driver.build(**kwargs) if cap == "default" else driver.build(**{driver.cap: cap}, **kwargs)


def test_adapter_ranks_like_the_core_object(driver, default_ranker):
    out = driver.ranked(driver.rerank(build(driver, 3, ranker=default_ranker), QUERY, driver.documents(TEXTS)))
    expected = default_ranker.rerank(QUERY, TEXTS, top_k=3)
    assert [i for i, _ in out] == [f"d{d.index}" for d in expected]
    assert all(type(s) is float for _, s in out)
    assert [s for _, s in out] == pytest.approx([d.score for d in expected], abs=1e-6)


def test_adapter_score_threshold_keeps_what_the_core_keeps_and_reports_its_relevance(driver, default_ranker):
    full = default_ranker.rerank(QUERY, TEXTS)
    relevance = sorted(d.relevance_score for d in full)
    threshold = (relevance[len(relevance) // 2 - 1] + relevance[len(relevance) // 2]) / 2  # keeps about half
    expected = default_ranker.rerank(QUERY, TEXTS, score_threshold=threshold)
    assert 0 < len(expected) < len(TEXTS)
    adapter = build(driver, driver.keep_all, ranker=default_ranker, score_threshold=threshold)
    result = driver.rerank(adapter, QUERY, driver.documents(TEXTS))
    assert [i for i, _ in driver.ranked(result)] == [f"d{d.index}" for d in expected]
    got = [driver.relevance(item) for item in driver.items(result)]
    assert got == pytest.approx([d.relevance_score for d in expected], abs=1e-6)
    assert all(type(r) is float and r >= threshold for r in got)
    with pytest.raises((ValueError, TypeError)):
        build(driver, ranker=default_ranker, score_threshold=float("nan"))


def test_adapter_returns_scored_copies_best_first_and_leaves_inputs_untouched(driver, default_ranker):
    documents = driver.documents(TEXTS)
    before = copy.deepcopy(documents)
    result = driver.rerank(build(driver, 2, ranker=default_ranker), QUERY, documents)
    out = driver.ranked(result)
    assert len(out) == 2 and out[0][1] >= out[1][1]
    assert driver.untouched(documents) and documents == before
    assert all(o is not d for o in driver.items(result) for d in documents)


def test_adapter_keeps_every_document_when_the_cap_is_beyond_n_or_none(driver, default_ranker):
    documents = driver.documents(TEXTS)
    caps = [50, None] if driver.accepts_no_cap else [50]
    for cap in caps:
        out = driver.ranked(driver.rerank(build(driver, cap, ranker=default_ranker), QUERY, documents))
        assert len(out) == len(TEXTS) and sorted(i for i, _ in out) == sorted(f"d{i}" for i in range(len(TEXTS))), cap
        assert sum(s for _, s in out) == pytest.approx(1.0, abs=1e-5)
        assert [s for _, s in out] == sorted((s for _, s in out), reverse=True)
    assert driver.untouched(documents)


def test_adapter_scores_duplicates_and_blank_documents_and_caps_at_n(driver, default_ranker):
    expected = default_ranker.score(DUPLICATES_QUERY, DUPLICATES)
    documents = driver.documents(DUPLICATES, prefix="")
    out = driver.ranked(driver.rerank(build(driver, 50, ranker=default_ranker), DUPLICATES_QUERY, documents))
    assert dict(out) == {str(i): pytest.approx(s, abs=1e-6) for i, s in enumerate(expected)}


def test_adapter_empty_and_bad_inputs(driver, default_ranker):
    adapter = build(driver, ranker=default_ranker)
    assert driver.rerank(adapter, QUERY, []) == driver.empty
    with pytest.raises(ValueError, match="query"):
        driver.rerank(adapter, "  ", driver.documents(TEXTS))
    with pytest.raises(driver.bad_cap_error, match=driver.cap):
        build(driver, 0)
    with pytest.raises(ValueError, match="scoring_mode"):
        build(driver, scoring_mode="nope")
    with pytest.raises(TypeError):
        build(driver, config={"no_such_field": 1})
    with pytest.raises(ValueError, match="either"):
        build(driver, ranker=default_ranker, model="other")
    with pytest.raises(ValueError, match="either"):
        build(driver, ranker=default_ranker, scoring_mode="icr")


def test_adapter_loads_lazily_and_shares_the_registered_ranker(driver, default_ranker):
    build(driver, ranker=default_ranker)  # registers it as the shared default
    lazy = build(driver, 2)
    assert driver.held(lazy) is None  # nothing loads at construction
    driver.rerank(lazy, QUERY, driver.documents(TEXTS[:2]))
    assert driver.held(lazy) is default_ranker
    named = build(driver, scoring_mode="blockrank")  # the default mode, named: the same settings, the same ranker
    driver.rerank(named, QUERY, driver.documents(TEXTS[:2]))
    assert driver.held(named) is default_ranker


def test_adapter_resolves_scoring_mode_and_config_over_the_model_settings(driver):
    adapter = build(driver, scoring_mode="icr", config={"max_block_tokens": 128})
    expected = BlockRankConfig(**{**model_settings(None), "scoring_mode": "icr", "max_block_tokens": 128})
    assert adapter._config == expected
    assert driver.held(adapter) is None


def test_adapter_device_reaches_the_config_and_conflicts_are_refused(driver, default_ranker):
    adapter = build(driver, device="cpu")
    assert adapter._config.device == "cpu" and driver.held(adapter) is None
    with pytest.raises(ValueError, match="device"):
        build(driver, device="cpu", config={"device": "meta"})
    with pytest.raises(ValueError, match="not both"):
        build(driver, device="cpu", ranker=default_ranker)
    if not torch.cuda.is_available():  # an absent device fails at construction, not at the first query
        with pytest.raises(ValueError, match="no cuda device"):
            build(driver, device="cuda")


def test_adapter_warnings_point_at_the_callers_line(driver, default_ranker):
    """A truncation warning names the line that called the adapter, not a line of this library or the framework."""
    import warnings

    engine = default_ranker.engine
    short_blocks = BlockRank(engine.model, engine.tokenizer, default_ranker.config.replace(max_block_tokens=128))
    adapter = build(driver, ranker=short_blocks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        driver.rerank(adapter, QUERY, driver.documents(["a very long passage about tides " * 40, "short"]))
    truncation = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1 and truncation[0].filename == __file__, [(w.filename, w.lineno) for w in caught]


def test_adapter_with_a_model_that_cannot_load_fails_before_the_first_query(driver, monkeypatch):
    """LangChain and LlamaIndex refuse at construction; Haystack, whose pipelines are built before they run, at
    warm_up. Both with one clear message."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def prepare(model: str) -> None:  # construction, plus warm_up where the framework has one
        adapter = build(driver, model=model)
        if driver.name == "haystack":
            adapter.warm_up()

    with pytest.raises(OSError, match="neither a local directory nor in the Hugging Face cache"):
        prepare("no-such-org/no-such-model")
    with pytest.raises(ValueError, match="unknown embedded model"):
        prepare("embedded:nothing")


def test_adapter_icr_mode_reaches_the_core(driver, default_ranker):
    icr = BlockRank(default_ranker.engine.model, default_ranker.engine.tokenizer, BlockRankConfig(scoring_mode="icr"))
    out = driver.ranked(driver.rerank(build(driver, 3, ranker=icr), QUERY, driver.documents(TEXTS)))
    expected = icr.rerank(QUERY, TEXTS, top_k=3)
    assert [i for i, _ in out] == [f"d{d.index}" for d in expected]
    assert [s for _, s in out] == pytest.approx([d.score for d in expected], abs=1e-6)


def test_adapter_async_calls_in_parallel_match_sync_and_leave_the_event_loop_free(
    driver, default_ranker, forward_watch
):
    adapter = build(driver, driver.keep_all, ranker=default_ranker)
    batches = [driver.documents(docs, prefix=f"{i}-") for i, (_, docs) in enumerate(CONCURRENT_REQUESTS)]
    expected = [driver.ranked(driver.rerank(adapter, q, b)) for b, (q, _) in zip(batches, CONCURRENT_REQUESTS)]
    calls = [driver.arerank(adapter, q, b) for b, (q, _) in zip(batches, CONCURRENT_REQUESTS)]
    results, ticks, elapsed = asyncio.run(gather_beside_ticker(calls))
    assert [driver.ranked(r) for r in results] == expected  # identical floats, not merely close
    assert forward_watch["most"] == 1, "two forwards ran on one model at once"
    assert_event_loop_was_free(ticks, elapsed)


def test_adapter_without_its_framework_names_the_extra_to_install(driver, monkeypatch):
    monkeypatch.delitem(sys.modules, driver.module)
    monkeypatch.setitem(sys.modules, driver.blocked, None)
    with pytest.raises(ImportError, match=rf'pip install "blockrank-rerank\[{driver.extra}\]"'):
        importlib.import_module(driver.module)

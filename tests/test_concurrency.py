"""One shared reranker under concurrent use (8 threads, the adapters' async paths) and bit-identical repeat runs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from blockrank_rerank import BlockRank, reranker as reranker_module
from blockrank_rerank.demo_corpus import DEMO_QUERIES
from conftest import assert_event_loop_was_free, gather_beside_ticker

THREADS = 8
REQUESTS = [(q["query"], q["documents"][: 2 + i % 3]) for i, q in enumerate(DEMO_QUERIES * THREADS)][:THREADS]


@pytest.fixture
def forward_watch(monkeypatch):
    """Counts model forwards running at the same moment on any ranker (the most seen is `watch["most"]`)."""
    watch = {"now": 0, "most": 0}
    guard = threading.Lock()
    original = reranker_module.run_to_scoring_layer

    def watched(*args, **kwargs):
        with guard:
            watch["now"] += 1
            watch["most"] = max(watch["most"], watch["now"])
        try:
            time.sleep(0.002)  # widen the window in which an unserialised second forward would overlap
            return original(*args, **kwargs)
        finally:
            with guard:
                watch["now"] -= 1

    monkeypatch.setattr(reranker_module, "run_to_scoring_layer", watched)
    return watch


def test_eight_threads_on_one_ranker_match_sequential_use(default_ranker, forward_watch):
    sequential = [default_ranker.rerank(q, docs).to_dicts() for q, docs in REQUESTS]
    barrier = threading.Barrier(THREADS)

    def worker(offset: int) -> list[tuple[int, list]]:
        barrier.wait()  # start together
        return [(i, default_ranker.rerank(*REQUESTS[i]).to_dicts()) for i in range(offset, len(REQUESTS), THREADS)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = dict(item for future in [pool.submit(worker, t) for t in range(THREADS)] for item in future.result())
    assert [results[i] for i in range(len(REQUESTS))] == sequential  # identical floats, not merely close
    assert forward_watch["most"] == 1, "two forwards ran on one model at once"


def test_repeated_calls_are_bit_identical_one_shot_and_chunked(default_ranker):
    query, docs = REQUESTS[0]
    first, second = default_ranker.score(query, docs), default_ranker.score(query, docs)
    assert [s.hex() for s in first] == [s.hex() for s in second]
    layout = default_ranker.layout(query, docs)
    chunked = BlockRank(default_ranker.model, default_ranker.tokenizer, default_ranker.config.replace(memory_budget_mb=1e-3))
    assert chunked.execution_plan(layout).chunked
    assert torch.equal(chunked.score_layout(layout), chunked.score_layout(layout))


def _scores_in_a_fresh_process() -> list[str]:
    query, docs = REQUESTS[0]
    code = (
        "import json, sys; from blockrank_rerank import BlockRank; "
        f"print(json.dumps([s.hex() for s in BlockRank.from_pretrained().score({query!r}, {docs!r})]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_scores_are_bit_identical_across_processes(default_ranker):
    query, docs = REQUESTS[0]
    here = [s.hex() for s in default_ranker.score(query, docs)]
    assert _scores_in_a_fresh_process() == here


def test_langchain_async_calls_in_parallel(default_ranker, forward_watch):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from blockrank_rerank.integrations.langchain import BlockRankRerank

    compressor = BlockRankRerank(ranker=default_ranker, top_n=None)
    batches = [[Document(page_content=t, id=f"{i}-{k}") for k, t in enumerate(docs)] for i, (_, docs) in enumerate(REQUESTS[:THREADS])]
    expected = [[(d.id, d.metadata["relevance_score"]) for d in compressor.compress_documents(b, q)] for b, (q, _) in zip(batches, REQUESTS)]
    results, ticks, elapsed = asyncio.run(gather_beside_ticker([compressor.acompress_documents(b, q) for b, (q, _) in zip(batches, REQUESTS)]))
    assert [[(d.id, d.metadata["relevance_score"]) for d in r] for r in results] == expected
    assert forward_watch["most"] == 1
    assert_event_loop_was_free(ticks, elapsed)


def test_haystack_run_async_in_parallel(default_ranker, forward_watch):
    pytest.importorskip("haystack")
    from haystack import Document

    from blockrank_rerank.integrations.haystack import BlockRankRanker

    ranker = BlockRankRanker(ranker=default_ranker, top_k=None)
    batches = [[Document(id=f"{i}-{k}", content=t) for k, t in enumerate(docs)] for i, (_, docs) in enumerate(REQUESTS[:THREADS])]
    expected = [[(d.id, d.score) for d in ranker.run(q, b)["documents"]] for b, (q, _) in zip(batches, REQUESTS)]
    results, ticks, elapsed = asyncio.run(gather_beside_ticker([ranker.run_async(q, b) for b, (q, _) in zip(batches, REQUESTS)]))
    assert [[(d.id, d.score) for d in r["documents"]] for r in results] == expected
    assert forward_watch["most"] == 1
    assert_event_loop_was_free(ticks, elapsed)


def test_llamaindex_async_calls_in_parallel(default_ranker, forward_watch):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    from blockrank_rerank.integrations.llamaindex import BlockRankReranker

    reranker = BlockRankReranker(ranker=default_ranker, top_n=10)
    batches = [[NodeWithScore(node=TextNode(text=t, id_=f"{i}-{k}")) for k, t in enumerate(docs)] for i, (_, docs) in enumerate(REQUESTS[:THREADS])]
    expected = [[(n.node.node_id, n.score) for n in reranker.postprocess_nodes(b, query_str=q)] for b, (q, _) in zip(batches, REQUESTS)]
    calls = [reranker.apostprocess_nodes(b, query_str=q) for b, (q, _) in zip(batches, REQUESTS)]
    results, ticks, elapsed = asyncio.run(gather_beside_ticker(calls))
    assert [[(n.node.node_id, n.score) for n in r] for r in results] == expected
    assert forward_watch["most"] == 1
    assert_event_loop_was_free(ticks, elapsed)

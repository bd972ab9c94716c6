"""`blockrank serve` called by clients nobody here wrote: the cohere SDK (v1 and v2), Haystack's
HuggingFaceTEIRanker, LangChain's and LlamaIndex's Cohere rerankers; results equal `BlockRank.rerank`."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from blockrank_rerank.serve import ServeSettings
from serve_harness import running_server
from test_cli_hardening import tiny_from_pretrained

KEY = "test-key-0123"
QUERY = "what pulls the ocean tides"
DOCS = [
    "Chess is a board game for two players.",
    "The Moon's gravity pulls the oceans, which causes the tides.",
    "Stock markets fell sharply on Monday.",
    "Tides rise and fall twice a day along most coasts.",
    "A recipe for banana bread with walnuts.",
]


def expected(ranker, query: str = QUERY, docs: list = DOCS, top_k=None) -> list[tuple[int, float]]:
    """(index, score) best first as the server must return them: the calibrated score when there is one."""
    return [
        (d.index, d.relevance_score if d.relevance_score is not None else d.score)
        for d in ranker.rerank(query, docs, top_k=top_k)
    ]


@pytest.fixture(scope="module")
def tiny():
    return tiny_from_pretrained()


@pytest.fixture(scope="module")
def server(tiny):
    with running_server(tiny, ServeSettings(api_key=KEY, max_batch_size=8, batch_wait_ms=20)) as running:
        yield running


def test_cohere_v2_client(server, tiny):
    import cohere

    client = cohere.ClientV2(api_key=KEY, base_url=server.url)
    response = client.rerank(model="blockrank", query=QUERY, documents=DOCS, top_n=3)
    assert [(r.index, r.relevance_score) for r in response.results] == expected(tiny, top_k=3)
    assert response.meta.api_version.version == "2" and response.meta.tokens.input_tokens > 0
    assert response.id


def test_cohere_v1_client_objects_rank_fields_and_return_documents(server, tiny):
    import cohere

    client = cohere.Client(api_key=KEY, base_url=server.url)
    objects = [{"text": text, "source": f"s{k}"} for k, text in enumerate(DOCS)]
    response = client.rerank(query=QUERY, documents=objects, return_documents=True, model="blockrank")
    assert [(r.index, r.relevance_score) for r in response.results] == expected(tiny)
    first = response.results[0]
    assert first.document.text == DOCS[first.index] and first.document.source == f"s{first.index}"  # echoed whole
    fields = client.rerank(query=QUERY, documents=objects, rank_fields=["source", "text"], top_n=2)
    ranked_texts = [f"source: s{k}\ntext: {text}" for k, text in enumerate(DOCS)]
    assert [(r.index, r.relevance_score) for r in fields.results] == expected(tiny, docs=ranked_texts, top_k=2)


def test_haystack_tei_ranker(server, tiny):
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker, TruncationDirection

    ranker = HuggingFaceTEIRanker(url=server.url, top_k=3, token=Secret.from_token(KEY))
    documents = [Document(content=text, meta={"k": k}) for k, text in enumerate(DOCS)]
    result = ranker.run(query=QUERY, documents=documents)["documents"]
    assert [(d.meta["k"], d.score) for d in result] == expected(tiny, top_k=3)
    cut = ranker.run(query=QUERY, documents=documents, truncation_direction=TruncationDirection.LEFT)["documents"]
    assert [(d.meta["k"], d.score) for d in cut] == expected(tiny, top_k=3)  # short texts: nothing to cut
    raw = HuggingFaceTEIRanker(url=server.url, top_k=5, raw_scores=True, token=Secret.from_token(KEY))
    shares = raw.run(query=QUERY, documents=documents)["documents"]
    assert [(d.meta["k"], d.score) for d in shares] == [(d.index, d.score) for d in tiny.rerank(QUERY, DOCS)]


def test_langchain_cohere_rerank(server, tiny):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    compressor = CohereRerank(model="blockrank", base_url=server.url, cohere_api_key=KEY, top_n=2)
    documents = [Document(page_content=text, metadata={"k": k}) for k, text in enumerate(DOCS)]
    result = compressor.compress_documents(documents, QUERY)
    assert [(d.metadata["k"], d.metadata["relevance_score"]) for d in result] == expected(tiny, top_k=2)


def test_llamaindex_cohere_rerank(server, tiny):
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    reranker = CohereRerank(model="blockrank", api_key=KEY, base_url=server.url, top_n=2, max_retries=1)
    nodes = [NodeWithScore(node=TextNode(text=text, id_=f"n{k}")) for k, text in enumerate(DOCS)]
    result = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert [(n.node.node_id, n.score) for n in result] == [(f"n{i}", s) for i, s in expected(tiny, top_k=2)]


def test_concurrent_requests_are_batched_and_each_equals_its_own_rerank(server, tiny):
    queries = [f"{QUERY} {k}" for k in range(8)]
    barrier = threading.Barrier(len(queries))

    def call(query: str) -> list[tuple[int, float]]:
        barrier.wait()
        body = httpx.post(
            server.url + "/v2/rerank",
            json={"model": "m", "query": query, "documents": DOCS},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
        ).json()
        return [(r["index"], r["relevance_score"]) for r in body["results"]]

    with ThreadPoolExecutor(len(queries)) as pool:
        results = list(pool.map(call, queries))
    assert results == [expected(tiny, query=q) for q in queries]
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    batched = [line for line in metrics.splitlines() if line.startswith('blockrank_batch_size_bucket{le="1.0"}')]
    total = [line for line in metrics.splitlines() if line.startswith("blockrank_batch_size_count")]
    assert float(batched[0].split()[-1]) < float(total[0].split()[-1]), "no batch held more than one request"


def test_the_default_model_over_http_equals_rerank(default_ranker):
    import cohere

    with running_server(default_ranker, ServeSettings()) as server:
        client = cohere.ClientV2(api_key="unused", base_url=server.url)
        response = client.rerank(model="blockrank", query=QUERY, documents=DOCS)
        tei = httpx.post(server.url + "/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
    want = expected(default_ranker)
    assert [(r.index, r.relevance_score) for r in response.results] == want
    assert [(r["index"], r["score"]) for r in tei] == want
    assert [r["text"] for r in tei] == [DOCS[i] for i, _ in want]

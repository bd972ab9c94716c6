"""`blockrank serve` error paths: every bad request is a 4xx JSON body naming the field, never a 500 traceback."""

from __future__ import annotations

import httpx
import pytest

from blockrank_rerank.serve import ServeSettings
from serve_harness import running_server
from test_cli_hardening import tiny_from_pretrained

KEY = "secret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCS = ["The Moon's gravity pulls the oceans.", "Chess is a board game.", "Tides rise twice a day."]
LONG = " ".join(f"tide{k}" for k in range(40))  # 80+ tokens, head and tail differ: over the 20-token limit below


@pytest.fixture(scope="module")
def tiny():
    return tiny_from_pretrained()


@pytest.fixture(scope="module")
def server(tiny):
    settings = ServeSettings(
        api_key=KEY, max_documents=5, max_body_bytes=4096, max_tokens_per_doc=20, max_query_tokens=12
    )
    with running_server(tiny, settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as session:
        yield session


def served(ranker, query: str, docs: list[str]) -> dict[int, float]:
    """Index -> the score the server must send: the calibrated relevance score when there is one, else the share."""
    return {
        d.index: d.relevance_score if d.relevance_score is not None else d.score for d in ranker.rerank(query, docs)
    }


def error_of(response: httpx.Response, status: int, field=None) -> str:
    """The error message of a JSON error body with `status` and `field`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert "Traceback" not in response.text and body["message"] == body["error"] and body["error_type"]
    assert body.get("field") == field, body
    return body["message"]


def test_auth_missing_wrong_and_public_health(server):
    response = httpx.post(server.url + "/v2/rerank", json={"query": "q", "documents": DOCS})
    assert "Bearer" in error_of(response, 401, "Authorization") and response.headers["www-authenticate"] == "Bearer"
    error_of(
        httpx.post(server.url + "/rerank", json={}, headers={"Authorization": "Bearer wrong"}), 403, "Authorization"
    )
    error_of(httpx.get(server.url + "/metrics", headers={"Authorization": f"Basic {KEY}"}), 401, "Authorization")
    error_of(httpx.get(server.url + "/info", headers={"Authorization": "Bearer"}), 401, "Authorization")
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # probes need no key


def test_cohere_sdk_surfaces_the_errors(server):
    import cohere
    from cohere.core.api_error import ApiError

    with pytest.raises(ApiError) as denied:
        cohere.ClientV2(api_key="wrong", base_url=server.url).rerank(model="m", query="q", documents=DOCS)
    assert denied.value.status_code == 403
    with pytest.raises(ApiError) as refused:
        cohere.ClientV2(api_key=KEY, base_url=server.url).rerank(model="m", query="q", documents=DOCS * 2)
    assert refused.value.status_code == 422 and refused.value.body["field"] == "documents"


def test_malformed_json_and_wrong_body_types(client):
    headers = {"content-type": "application/json"}
    assert "not valid JSON" in error_of(
        client.post("/v2/rerank", content=b'{"query": "q",', headers=headers), 400, "body"
    )
    error_of(client.post("/rerank", content=b"[1, 2]", headers=headers), 422, "body")
    error_of(client.post("/rerank", content=b"query=q", headers={"content-type": "text/plain"}), 422, "body")


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v2/rerank", {"query": 5, "documents": DOCS}, "query"),
        ("/v2/rerank", {"documents": DOCS}, "query"),
        ("/v2/rerank", {"query": "q", "documents": "one string"}, "documents"),
        ("/v2/rerank", {"query": "q", "documents": ["a", 3]}, "documents[1]"),
        ("/v2/rerank", {"query": "q", "documents": DOCS, "top_n": "2"}, "top_n"),
        ("/v2/rerank", {"query": "q", "documents": DOCS, "top_n": 0}, "top_n"),
        ("/v2/rerank", {"query": "q", "documents": DOCS, "max_tokens_per_doc": True}, "max_tokens_per_doc"),
        ("/v1/rerank", {"query": "q", "documents": [{"text": "a"}, {"title": "no text"}]}, "documents[1].text"),
        ("/v1/rerank", {"query": "q", "documents": DOCS, "return_documents": "yes"}, "return_documents"),
        ("/rerank", {"query": "q", "texts": ["a", None]}, "texts[1]"),
        ("/rerank", {"query": "q", "texts": DOCS, "truncation_direction": "Up"}, "truncation_direction"),
        ("/rerank", {"query": "q", "texts": DOCS, "raw_scores": 1}, "raw_scores"),
    ],
)
def test_wrong_types_name_the_field(client, route, body, field):
    error_of(client.post(route, json=body), 422, field)


@pytest.mark.parametrize(
    "route,docs_key", [("/v1/rerank", "documents"), ("/v2/rerank", "documents"), ("/rerank", "texts")]
)
def test_empty_and_too_many_documents_and_blank_query(client, route, docs_key):
    assert "empty" in error_of(client.post(route, json={"query": "q", docs_key: []}), 422, docs_key)
    assert "limit of 5" in error_of(client.post(route, json={"query": "q", docs_key: DOCS * 2}), 422, docs_key)
    error_of(client.post(route, json={"query": "  ", docs_key: DOCS}), 422, "query")


def test_oversized_body_declared_or_chunked(client):
    big = {"query": "q", "documents": ["x" * 5000]}
    error_of(client.post("/v2/rerank", json=big), 413, "body")

    def chunks():
        yield b'{"query": "q", "texts": ["'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"]}'

    response = client.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers  # streamed: the limit is counted, not declared
    error_of(response, 413, "body")


def test_unknown_route_and_wrong_method(client):
    assert "/v2/rerank" in error_of(client.post("/v3/rerank", json={}), 404)
    error_of(client.get("/v2/rerank"), 405)


def test_token_limits_truncate_or_refuse_as_asked(client, tiny):
    docs = [DOCS[0], LONG, DOCS[2]]
    assert "truncate=true" in error_of(client.post("/rerank", json={"query": "tides", "texts": docs}), 422, "texts[1]")
    cut = client.post("/rerank", json={"query": "tides", "texts": docs, "truncate": True}).json()
    tokens = tiny.engine.tokenizer.backend_tokenizer.encode(LONG, add_special_tokens=False)
    head = LONG[: tokens.offsets[19][1]]
    assert {r["index"]: r["score"] for r in cut} == served(tiny, "tides", [DOCS[0], head, DOCS[2]])
    left = client.post(
        "/rerank", json={"query": "tides", "texts": docs, "truncate": True, "truncation_direction": "Left"}
    ).json()
    tail = LONG[tokens.offsets[len(tokens.ids) - 20][0] :]
    assert head.split()[0] == "tide0" and tail.split()[-1] == "tide39" and head != tail
    assert {r["index"]: r["score"] for r in left} == served(tiny, "tides", [DOCS[0], tail, DOCS[2]])
    cohere = client.post("/v2/rerank", json={"query": "tides", "documents": docs, "max_tokens_per_doc": 5}).json()
    assert cohere["meta"]["warnings"] == ["3 documents truncated to 5 tokens"]
    long_query = " ".join(["ocean"] * 40)
    error_of(client.post("/v2/rerank", json={"query": long_query, "documents": DOCS}), 422, "query")
    assert client.post("/rerank", json={"query": long_query, "texts": DOCS, "truncate": True}).status_code == 200


def test_v1_rank_fields_documents_need_no_text(client, tiny):
    documents = [{"title": "Moon and tides", "n": 5}, {"title": "Chess", "text": 7}]
    body = {"query": "tides", "documents": documents, "rank_fields": ["title"], "return_documents": True}
    results = client.post("/v1/rerank", json=body).json()["results"]
    by_index = {r["index"]: r for r in results}
    assert by_index[0]["document"] == {"title": "Moon and tides", "n": 5, "text": ""}
    ranked = tiny.rerank("tides", ["title: Moon and tides", "title: Chess"])
    assert [r["index"] for r in results] == [d.index for d in ranked]


def test_cors_is_off_by_default_and_on_when_asked(server, tiny):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    response = httpx.options(server.url + "/v2/rerank", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    with running_server(tiny, ServeSettings(cors_origins=("https://app.example",))) as open_server:
        allowed = httpx.options(open_server.url + "/v2/rerank", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"


def test_info_and_metrics(client, server):
    info = client.get("/info").json()
    assert info["limits"]["max_tokens_per_doc"] == 20 and info["limits"]["max_documents"] == 5 and info["auth"]
    assert info["scoring_layer"] == 1 and info["model_id"] == "tiny"
    client.post("/v2/rerank", json={"query": "tides", "documents": DOCS})
    text = client.get("/metrics").text
    for name in (
        "blockrank_requests_total",
        "blockrank_request_latency_seconds_bucket",
        "blockrank_documents_total",
        "blockrank_input_tokens_total",
        "blockrank_queue_depth",
        "blockrank_errors_total",
    ):
        assert name in text, name
    assert 'blockrank_errors_total{status="422"}' in text

"""Haystack adapter inside real pipelines (BM25 retriever -> ranker; the example YAML), on the embedded default model.

What all three adapters share (inputs, caps, errors, async, ICR, the missing extra): test_adapter_contract.py.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

pytest.importorskip("haystack")

from haystack import Document, Pipeline  # noqa: E402
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402
from haystack.document_stores.types import DuplicatePolicy  # noqa: E402

from blockrank_rerank import BlockRankConfig  # noqa: E402
from blockrank_rerank.evaluation.demo_corpus import DEMO_QUERIES  # noqa: E402
from blockrank_rerank.integrations.haystack import BlockRankRanker  # noqa: E402

QUERY = DEMO_QUERIES[0]["query"]
TEXTS = DEMO_QUERIES[0]["documents"]
EXAMPLE_YAML = Path(__file__).resolve().parents[1] / "examples" / "haystack_pipeline.yaml"
HAYSTACK_3 = "allowed_modules" in inspect.signature(Pipeline.loads).parameters
TRUSTED = {"allowed_modules": ["blockrank_rerank"]} if HAYSTACK_3 else {}


def _documents() -> list[Document]:
    return [Document(id=f"d{i}", content=t, meta={"title": f"T{i}"}, score=0.5) for i, t in enumerate(TEXTS)]


def _retrieval_pipeline(ranker: BlockRankRanker) -> Pipeline:
    store = InMemoryDocumentStore()
    store.write_documents(_documents())
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=len(TEXTS)))
    pipeline.add_component("ranker", ranker)
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def test_pipeline_ranks_like_the_core_object(default_ranker):
    pipeline = _retrieval_pipeline(BlockRankRanker(ranker=default_ranker, top_k=3))
    result = pipeline.run(
        {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}, include_outputs_from={"retriever"}
    )
    retrieved, ranked = result["retriever"]["documents"], result["ranker"]["documents"]
    expected = default_ranker.rerank(QUERY, [d.content for d in retrieved], top_k=3)

    assert [d.id for d in ranked] == [retrieved[d.index].id for d in expected]
    assert all(type(d.score) is float for d in ranked)
    assert [d.score for d in ranked] == pytest.approx([d.score for d in expected], abs=1e-6)
    relevance = [d.relevance_score for d in expected]
    assert [d.meta for d in ranked] == [
        {"title": d.id.replace("d", "T"), "relevance_score": r} for d, r in zip(ranked, relevance)
    ]


def test_run_time_top_k_overrides_the_init_value_and_documents_need_text(default_ranker):
    ranker = BlockRankRanker(ranker=default_ranker, top_k=2)
    documents = _documents()
    assert len(ranker.run(QUERY, documents)["documents"]) == 2
    assert len(ranker.run(QUERY, documents, top_k=5)["documents"]) == 5
    with pytest.raises(ValueError, match="top_k"):
        ranker.run(QUERY, documents, top_k=0)
    with pytest.raises(ValueError, match="content"):
        ranker.run(QUERY, [Document(id="empty"), documents[0]])


def test_meta_fields_are_scored_as_a_title(default_ranker):
    out = BlockRankRanker(ranker=default_ranker, top_k=None, meta_fields_to_embed=["title"]).run(QUERY, _documents())[
        "documents"
    ]
    expected = default_ranker.rerank(QUERY, [{"title": f"T{i}", "text": t} for i, t in enumerate(TEXTS)])
    assert [d.id for d in out] == [f"d{d.index}" for d in expected]


def test_warm_up_is_idempotent_and_shares_the_model(default_ranker):
    BlockRankRanker(ranker=default_ranker)  # registers it as the shared default
    lazy = BlockRankRanker()
    assert lazy._ranker is None
    lazy.warm_up()
    first = lazy._ranker
    lazy.warm_up()
    assert lazy._ranker is first is default_ranker


def test_serialised_form_is_pinned(default_ranker):
    component = BlockRankRanker(
        model="some/model",
        top_k=4,
        scoring_mode="icr",
        config={"max_block_tokens": 128},
        meta_fields_to_embed=["title"],
    )
    assert component.to_dict() == {
        "type": "blockrank_rerank.integrations.haystack.BlockRankRanker",
        "init_parameters": {
            "model": "some/model",
            "top_k": 4,
            "scoring_mode": "icr",
            "config": {"max_block_tokens": 128},
            "meta_fields_to_embed": ["title"],
            "device": None,
            "score_threshold": None,
        },
    }
    wrapped = BlockRankRanker(ranker=default_ranker).to_dict()["init_parameters"]
    assert (
        wrapped["model"] == default_ranker.engine.name and BlockRankConfig(**wrapped["config"]) == default_ranker.config
    )
    assert BlockRankRanker.from_dict(component.to_dict())._config == BlockRankConfig(
        scoring_mode="icr", max_block_tokens=128
    )
    from haystack.utils import ComponentDevice

    on_cpu = BlockRankRanker(device=ComponentDevice.from_str("cpu"))  # Haystack's own device type is accepted
    assert on_cpu.to_dict()["init_parameters"]["device"] == "cpu" and on_cpu._config.device == "cpu"
    assert BlockRankRanker.from_dict(on_cpu.to_dict())._config.device == "cpu"


def test_yaml_round_trip_gives_the_same_documents(default_ranker):
    pipeline = _retrieval_pipeline(BlockRankRanker(ranker=default_ranker, top_k=4))
    inputs = {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}
    before = pipeline.run(inputs)["ranker"]["documents"]

    loaded = Pipeline.loads(pipeline.dumps(), **TRUSTED)
    # A store's contents are not serialised (in one process, stores sharing an index name share them): refill it.
    loaded.get_component("retriever").document_store.write_documents(_documents(), policy=DuplicatePolicy.OVERWRITE)
    after = loaded.run(inputs)["ranker"]["documents"]

    assert loaded.get_component("ranker")._ranker is default_ranker  # rebuilt from YAML, no reload
    assert [d.id for d in after] == [d.id for d in before]
    assert [d.score for d in after] == pytest.approx([d.score for d in before], abs=1e-6)


@pytest.mark.skipif(not HAYSTACK_3, reason="Haystack 2 has no deserialisation allowlist")
def test_haystack3_allowlist(monkeypatch, default_ranker):
    from haystack.core.errors import DeserializationError

    text = _retrieval_pipeline(BlockRankRanker(ranker=default_ranker)).dumps()
    monkeypatch.delenv("HAYSTACK_DESERIALIZATION_ALLOWLIST", raising=False)
    with pytest.raises(DeserializationError, match="blockrank_rerank"):
        Pipeline.loads(text)
    monkeypatch.setenv("HAYSTACK_DESERIALIZATION_ALLOWLIST", "blockrank_rerank")
    assert isinstance(Pipeline.loads(text).get_component("ranker"), BlockRankRanker)


def test_example_yaml_loads_and_runs(default_ranker):
    pipeline = Pipeline.loads(EXAMPLE_YAML.read_text(encoding="utf-8"), **TRUSTED)
    BlockRankRanker(ranker=default_ranker)  # the YAML asks for the embedded default: reuse the loaded one
    result = pipeline.run(
        {"ranker": {"query": QUERY, "documents": _documents()}, "prompt_builder": {"query": QUERY}},
        include_outputs_from={"ranker"},
    )
    ranked = result["ranker"]["documents"]
    expected = default_ranker.rerank(QUERY, [{"title": f"T{i}", "text": t} for i, t in enumerate(TEXTS)], top_k=5)
    assert [d.id for d in ranked] == [f"d{d.index}" for d in expected]
    prompt = result["prompt_builder"]["prompt"]
    assert prompt.index(ranked[0].meta["title"] + ".") < prompt.index(ranked[1].meta["title"] + ".") and QUERY in prompt

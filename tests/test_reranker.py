"""The public reranker on the embedded default model: results, bad input, batching."""

from __future__ import annotations

import warnings

import pytest

from blockrank_rerank import BlockRank, BlockRankConfig, RankedList

DOCS = ["Cats are small domesticated felines.", "The stock market fell sharply today.", "Dogs are loyal pets.", "  "]


def test_rerank_returns_all_documents_best_first(default_ranker):
    result = default_ranker.rerank("what is a cat", DOCS)
    assert isinstance(result, RankedList) and len(result) == 4
    assert sorted(d.index for d in result) == [0, 1, 2, 3]
    assert [d.rank for d in result] == [1, 2, 3, 4]
    scores = [d.score for d in result]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(s, float) and 0 <= s <= 1 for s in scores)
    assert abs(sum(scores) - 1) < 1e-5
    assert result.scores_by_index()[0] == pytest.approx(default_ranker.score("what is a cat", DOCS)[0], abs=1e-6)


def test_top_k_ids_and_metadata_pass_through(default_ranker):
    docs = [{"id": f"d{i}", "text": t, "title": "T", "source": "unit"} for i, t in enumerate(DOCS[:3])]
    result = default_ranker.rerank("what is a cat", docs, top_k=2)
    assert len(result) == 2 and result[0].id in {"d0", "d1", "d2"}
    assert result[0].metadata == {"source": "unit"} and result[0].text.startswith("T ")
    assert docs[0] == {"id": "d0", "text": DOCS[0], "title": "T", "source": "unit"}  # input untouched
    assert len(default_ranker.rerank("q", DOCS, top_k=10)) == 4


def test_empty_single_and_bad_inputs(default_ranker):
    assert len(default_ranker.rerank("q", [])) == 0
    single = default_ranker.rerank("q", ["only one"])
    assert single[0].score == 1.0 and single[0].index == 0
    with pytest.raises(ValueError, match="query"):
        default_ranker.rerank("   ", DOCS)
    with pytest.raises(TypeError, match="query"):
        default_ranker.rerank(None, DOCS)
    with pytest.raises(TypeError, match="document 1"):
        default_ranker.rerank("q", ["ok", 42])
    with pytest.raises(TypeError, match="documents"):
        default_ranker.rerank("q", "a single string")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k"):
            default_ranker.rerank("q", DOCS, top_k=bad)


def test_long_documents_warn_once_and_are_scored(default_ranker):
    ranker = BlockRank(
        default_ranker.engine.model, default_ranker.engine.tokenizer, BlockRankConfig(max_block_tokens=128)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ranker.rerank("q", ["word " * 300, "word " * 400, "short"])
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1
    assert len(result) == 3


def test_duplicates_are_each_scored_and_equal(default_ranker):
    result = default_ranker.rerank("cats", ["Cats purr.", "Cats purr.", "Stocks fell."])
    assert len(result) == 3 and abs(sum(d.score for d in result) - 1) < 1e-5
    scores = result.scores_by_index()
    assert scores[0] == scores[1]
    order = [d.index for d in result]
    assert order.index(0) == order.index(1) - 1, "equal scores tie-break by input order"


def test_rerank_batch_matches_single_calls(default_ranker):
    batch = default_ranker.rerank_batch(["cats", "stocks"], [DOCS[:3], DOCS[:2]], top_k=2, show_progress_bar=False)
    assert [len(r) for r in batch] == [2, 2]
    assert batch[1].to_dicts() == default_ranker.rerank("stocks", DOCS[:2], top_k=2).to_dicts()
    with pytest.raises(ValueError, match="queries"):
        default_ranker.rerank_batch(["a"], [])


def test_config_is_validated():
    with pytest.raises(TypeError):
        BlockRankConfig(no_such_field=1)
    with pytest.raises(ValueError, match="scoring_mode"):
        BlockRankConfig(scoring_mode="dense")
    with pytest.raises(ValueError, match="dtype"):
        BlockRankConfig(dtype="fp8")
    with pytest.raises(ValueError, match="attention backend|attention_backend"):
        BlockRankConfig(attention_backend="magic")


def test_scoring_layer_beyond_the_model_is_refused(default_ranker):
    with pytest.raises(ValueError, match="scoring_layer"):
        BlockRank(default_ranker.engine.model, default_ranker.engine.tokenizer, BlockRankConfig(scoring_layer=30))


def test_model_settings_for_released_copies_and_older_trained_records(tmp_path):
    import json

    from blockrank_rerank.loading import model_settings

    released = model_settings("quicktensor/blockrank-msmarco-mistral-7b")
    assert released["query_position_offset"] == 16384 and released["max_block_tokens"] == 384
    assert model_settings(str(tmp_path / "blockrank-msmarco-mistral-7b")) == released  # a local copy
    assert (
        model_settings(str(tmp_path / "models--quicktensor--blockrank-msmarco-mistral-7b" / "snapshots" / "abc"))
        == released
    )
    assert model_settings("mistralai/Mistral-7B-Instruct-v0.3") == {}  # untrained: the library's defaults
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "blockrank.json").write_text(
        json.dumps({"settings": {"scoring_layer": 3}, "training": {"max_block_tokens": 160}})
    )
    assert model_settings(str(old)) == {
        "scoring_layer": 3,
        "max_block_tokens": 160,
    }  # written before settings carried the cap


def test_query_placement_defaults_and_overlap_warning(default_ranker):
    untrained_style = BlockRank(
        default_ranker.engine.model, default_ranker.engine.tokenizer, BlockRankConfig(max_block_tokens=128)
    )
    layout = untrained_style.engine.layout("tides", ["The Moon pulls the sea.", "Chess openings."])
    assert (
        int(layout.position_ids[layout.query_start]) == layout.prefix_length + 128
    )  # right after the longest allowed block
    overlapping = BlockRank(
        default_ranker.engine.model, default_ranker.engine.tokenizer, BlockRankConfig(query_position_offset=3)
    )
    with pytest.warns(UserWarning, match="inside the documents' positions"):
        overlapping.engine.layout("tides", ["The Moon pulls the sea.", "Chess openings."])

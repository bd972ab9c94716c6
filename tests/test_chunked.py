"""Exact chunked scoring equals the one-shot path; the online merge, chunking and the memory planner."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank.budget import MB, ModelShape, one_shot_bytes, plan_execution
from blockrank_rerank.chunked import PartialAttention, chunk_documents, chunked_scores, partial_attention
from blockrank_rerank.hidden_store import FileStore, MemoryStore
from blockrank_rerank.layout import build_layout
from blockrank_rerank.reference import dense_reference

from conftest import FAMILIES, random_prompt, tiny_model
from test_equivalence import SCORING_LAYER, packed_scores


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("peaked", [False, True])
def test_chunked_equals_one_shot(family, peaked):
    model = tiny_model(family, peaked=peaked)
    layout = build_layout(random_prompt(17, seed=3), query_position_offset=16384)
    one_shot, _ = packed_scores(model, layout)
    for chunk_tokens in (1, 13, 40, 10_000):
        for spill in (False, True):
            with torch.no_grad():
                scores = chunked_scores(model, layout, SCORING_LAYER, 2, chunk_tokens, spill=spill).shares
            torch.testing.assert_close(scores, one_shot, atol=1e-5, rtol=0)
    if peaked:
        assert float(one_shot.max() - one_shot.min()) > 0.05, "peaked model should not score uniformly"


def test_chunked_equals_dense_reference_with_one_signal_token_and_a_deep_layer():
    model = tiny_model("mistral", peaked=True, num_layers=5)
    layout = build_layout(random_prompt(11, seed=9), query_position_offset=16384)
    expected, _ = dense_reference(model, layout, 4, 1)
    with torch.no_grad():
        scores = chunked_scores(model, layout, 4, 1, 20, max_rows=16).shares
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=0)


def test_a_chunk_left_out_of_the_merge_would_be_caught():
    """The comparison above can fail: scoring only some chunks' documents moves peaked scores far beyond 1e-5."""
    model = tiny_model("llama", peaked=True)
    prompt = random_prompt(12, seed=4)
    layout = build_layout(prompt, query_position_offset=16384)
    fewer = build_layout(dataclasses.replace(prompt, documents=prompt.documents[:6]), query_position_offset=16384)
    with torch.no_grad():
        full = chunked_scores(model, layout, SCORING_LAYER, 2, 30).shares[:6]
        partial = chunked_scores(model, fewer, SCORING_LAYER, 2, 30).shares
    assert float((full / full.sum() - partial).abs().max()) > 1e-3


def test_partial_attention_merges_to_full_softmax():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(4, 5, 8, generator=g) * 3,
        torch.randn(2, 37, 8, generator=g) * 3,
        torch.randn(2, 37, 8, generator=g),
    )
    mask = torch.rand(5, 37, generator=g) > 0.3
    mask[:, 0] = True
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 0), v.repeat_interleave(2, 0), attn_mask=mask, scale=0.3
    )
    pieces = [partial_attention(q, k[:, a:b], v[:, a:b], 0.3, mask[:, a:b]) for a, b in ((0, 10), (10, 11), (11, 37))]
    merged = pieces[0].merge(pieces[1]).merge(pieces[2])  # the middle piece leaves some rows with no key (lse = -inf)
    torch.testing.assert_close(merged.out, expected, atol=1e-5, rtol=0)
    whole = partial_attention(q, k, v, 0.3, mask)
    torch.testing.assert_close(merged.lse, whole.lse, atol=1e-5, rtol=0)
    empty = PartialAttention(torch.zeros(4, 5, 8), torch.full((4, 5), float("-inf")))
    torch.testing.assert_close(empty.merge(whole).out, whole.out)


def test_chunk_documents_groups_consecutive_documents():
    chunks = chunk_documents((3, 4, 10, 2, 2), 7)
    assert [(c.first, c.last, c.start, c.stop) for c in chunks] == [(0, 2, 0, 7), (2, 3, 7, 17), (3, 5, 17, 21)]
    assert chunk_documents((), 5) == []
    for bad in (0, -1, 2.5, None):
        with pytest.raises(ValueError, match="max_tokens"):
            chunk_documents((1, 2), bad)


def test_chunked_path_refuses_the_causal_layout():
    layout = build_layout(random_prompt(3), query_position_offset=16384, causal_positions=True)
    with pytest.raises(ValueError, match="causal"):
        chunked_scores(tiny_model("llama"), layout, SCORING_LAYER, 2, 10)


@pytest.mark.parametrize("store_class", [MemoryStore, FileStore])
def test_hidden_stores_round_trip(store_class, tmp_path):
    for dtype in (torch.float32, torch.bfloat16):
        store = store_class(10, 3, dtype, "cpu")
        rows = torch.arange(12, dtype=torch.float32).view(4, 3).to(dtype)
        store.write(5, rows)
        assert torch.equal(store.read(5, 9), rows) and store.read(5, 9).dtype == dtype
        store.close()


def test_planner_one_shot_when_it_fits_chunked_otherwise():
    model = tiny_model("llama")
    shape = ModelShape.of(model)
    assert (shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.element_size) == (64, 4, 2, 16, 4)
    layout = build_layout(random_prompt(40, seed=2, max_len=30), query_position_offset=16384)
    whole = one_shot_bytes(layout.num_tokens, shape)
    assert not plan_execution(layout, shape, None).chunked
    assert not plan_execution(layout, shape, whole / MB).chunked
    roomy = plan_execution(layout, shape, (whole - 1) / MB)
    assert roomy.chunked and not roomy.spill and roomy.estimated_bytes <= whole
    store = sum(layout.document_lengths) * shape.hidden * shape.element_size
    tight = plan_execution(layout, shape, 1.5 * store / MB)  # the hidden states would take over half: spilled
    assert tight.chunked and tight.spill
    assert tight.chunk_tokens >= max(layout.document_lengths)


def test_a_budget_below_one_document_is_logged_and_still_scores(caplog):
    model = tiny_model("llama")
    layout = build_layout(random_prompt(6, seed=1), query_position_offset=16384)
    ranker = BlockRank(model, None, BlockRankConfig(scoring_layer=SCORING_LAYER, memory_budget_mb=0.001))
    with caplog.at_level(logging.WARNING, logger="blockrank_rerank.budget"):
        scores = ranker.engine.score_layout(layout)
    assert "below" in caplog.text
    reference = BlockRank(
        model, None, BlockRankConfig(scoring_layer=SCORING_LAYER, memory_budget_mb=None)
    ).engine.score_layout(layout)
    torch.testing.assert_close(scores, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_reranker_chunks_automatically_over_budget_only_in_blockrank_mode(family):
    model = tiny_model(family, peaked=True)
    layout = build_layout(random_prompt(30, seed=6, max_len=20), query_position_offset=16384)
    one_shot = BlockRank(model, None, BlockRankConfig(scoring_layer=SCORING_LAYER, memory_budget_mb=None))
    budget = (one_shot_bytes(layout.num_tokens, one_shot.engine.shape) - 1) / MB
    chunked = BlockRank(model, None, BlockRankConfig(scoring_layer=SCORING_LAYER, memory_budget_mb=budget))
    assert not one_shot.engine.execution_plan(layout).chunked and chunked.engine.execution_plan(layout).chunked
    torch.testing.assert_close(
        chunked.engine.score_layout(layout), one_shot.engine.score_layout(layout), atol=1e-5, rtol=0
    )
    assert not BlockRank(model, None, chunked.config.replace(early_exit=False)).engine.execution_plan(layout).chunked
    assert not BlockRank(model, None, chunked.config.replace(scoring_mode="icr")).engine.execution_plan(layout).chunked


def test_memory_budget_is_validated():
    for bad in (0, -5, "1GB", True, float("nan")):
        with pytest.raises(ValueError, match="memory_budget_mb"):
            BlockRankConfig(memory_budget_mb=bad)
    assert BlockRankConfig(memory_budget_mb=None).memory_budget_mb is None
    assert BlockRankConfig(memory_budget_mb=0.5).memory_budget_mb == 0.5

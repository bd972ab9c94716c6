"""ICR zero-shot scoring: the one-loop two-pass path equals two separate dense forwards, and the calibration rules."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from blockrank_rerank.icr import ICRTokenScores, calibrated_document_scores, icr_token_scores
from blockrank_rerank.layout import build_layout

from conftest import FAMILIES, random_prompt, tiny_model


@torch.no_grad()
def dense_query_block_attention(model, layout) -> torch.Tensor:
    """Sum over layers and heads of the mean query-block-row attention to document tokens, from HF eager maps."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        allowed = layout.allowed()  # (T, T)
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
        out = model.model(
            input_ids=layout.input_ids[None],
            attention_mask=mask[None, None],
            position_ids=layout.position_ids[None],
            output_attentions=True,
            use_cache=False,
        )
    finally:
        model.set_attn_implementation(previous)
    rows, _ = layout.document_rows()
    total = torch.zeros(len(rows))
    for attention in out.attentions:  # each (1, H, T, T)
        total += attention[0][:, layout.query_start :][:, :, rows].float().mean(dim=1).sum(dim=0)
    return total


@pytest.mark.parametrize("backend", ["torch", "dense"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("peaked", [False, True])
def test_shared_context_pass_matches_two_dense_forwards(family, peaked, backend):
    model = tiny_model(family, peaked=peaked)
    prompt = random_prompt(7, seed=5)
    calibration = [5, 6, 7, 8]
    layout = build_layout(prompt, query_position_offset=16384)
    layout_na = build_layout(dataclasses.replace(prompt, query_block=calibration), query_position_offset=16384)
    with torch.no_grad():
        tokens = icr_token_scores(model, layout, calibration, backend, max_rows=24)
    expected_query = dense_query_block_attention(model, layout)
    expected_calibration = dense_query_block_attention(model, layout_na)
    torch.testing.assert_close(tokens.query, expected_query, atol=1e-4, rtol=0)
    torch.testing.assert_close(tokens.calibration, expected_calibration, atol=1e-4, rtol=0)
    # The calibration really differs from the query pass (different query block), so the test can fail.
    assert (tokens.query - tokens.calibration).abs().max() > 1e-3


def test_reader_block_sees_the_context_and_itself_never_the_query_block():
    layout = build_layout(random_prompt(3, seed=2), query_position_offset=16384)
    extended = layout.with_reader_block([5, 6, 7])
    allowed = extended.allowed()
    reader = torch.arange(extended.reader_starts[0], extended.num_tokens)
    assert allowed[reader][:, : layout.query_start].all()  # prefix and every document
    assert not allowed[reader][:, layout.query_start : extended.reader_starts[0]].any()  # never the real query block
    assert torch.equal(allowed[reader][:, reader], torch.ones(3, 3, dtype=torch.bool).tril())
    assert torch.equal(allowed[: layout.num_tokens, : layout.num_tokens], layout.allowed())  # the rest is unchanged
    assert torch.equal(extended.position_ids[reader], layout.position_ids[layout.query_start : layout.query_start + 3])


def test_calibration_drops_low_tokens_per_document():
    owner = torch.tensor([0] * 10 + [1, 1, 2])
    query = torch.zeros(13)
    query[:9] = 1.0
    query[9] = -20.0  # far below document 0's mean - 2 std: dropped
    query[10:12] = torch.tensor([0.5, 0.25])
    query[12] = -3.0  # a one-token document keeps its only token
    scores = calibrated_document_scores(ICRTokenScores(query=query, calibration=torch.zeros(13), owner=owner), 3)
    torch.testing.assert_close(scores, torch.tensor([9.0, 0.75, -3.0]))


def test_calibration_subtracts_the_na_pass():
    owner = torch.tensor([0, 0, 1, 1])
    tokens = ICRTokenScores(
        query=torch.tensor([1.0, 1.0, 2.0, 2.0]), calibration=torch.tensor([0.5, 0.5, 2.0, 2.0]), owner=owner
    )
    torch.testing.assert_close(calibrated_document_scores(tokens, 2), torch.tensor([1.0, 0.0]))


def test_icr_mode_is_selectable_on_the_reranker(default_ranker):
    from blockrank_rerank import BlockRank

    ranker = BlockRank(
        default_ranker.engine.model, default_ranker.engine.tokenizer, default_ranker.config.replace(scoring_mode="icr")
    )
    docs = [
        "Paris is the capital and largest city of France.",
        "Bananas are rich in potassium.",
        "The stock market fell on Monday.",
    ]
    ranked = ranker.rerank("What is the capital of France?", docs)
    icr_scores = sorted(d.score for d in ranked)
    blockrank_scores = sorted(default_ranker.score("What is the capital of France?", docs))
    assert len(ranked) == 3 and all(torch.isfinite(torch.tensor(icr_scores)))
    assert abs(sum(icr_scores) - 1.0) > 0.05  # calibrated mass, unlike BlockRank's shares summing to 1
    assert abs(sum(blockrank_scores) - 1.0) < 1e-5

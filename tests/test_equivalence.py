"""The block-sparse packed path equals the dense reference (HF eager attention, explicit 4-D mask)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from blockrank_rerank import forward
from blockrank_rerank.attention import plan_attention
from blockrank_rerank.forward import run_to_scoring_layer
from blockrank_rerank.layout import build_layout
from blockrank_rerank.reference import dense_reference
from blockrank_rerank.scoring import document_scores, signal_attention

from conftest import FAMILIES, random_prompt, tiny_model

SCORING_LAYER = 2


def packed_scores(model, layout, backend="torch", num_signal=2, max_rows=8192, early_exit=True):
    plan = plan_attention(layout, max_rows)
    with torch.no_grad():
        state = run_to_scoring_layer(model, plan, SCORING_LAYER, num_signal, backend, early_exit)
    _, owner = layout.document_rows()
    return document_scores(
        signal_attention(state.signal_queries, state.document_keys, state.scale), owner, layout.num_documents
    ), state


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("peaked", [False, True])
@pytest.mark.parametrize("causal_positions", [False, True])
@pytest.mark.parametrize("token_chunk", [None, 7])
def test_packed_path_matches_dense_reference(family, peaked, causal_positions, token_chunk, monkeypatch):
    if token_chunk:  # the per-token steps in chunks of 7 rows, as CPU runs long streams in chunks of TOKEN_CHUNK
        monkeypatch.setattr(forward, "TOKEN_CHUNK", token_chunk)
    model = tiny_model(family, peaked=peaked)
    layout = build_layout(random_prompt(9, seed=3), query_position_offset=16384, causal_positions=causal_positions)
    expected, expected_hidden = dense_reference(model, layout, SCORING_LAYER, 2)
    for backend in ("torch", "flex", "dense"):
        scores, state = packed_scores(model, layout, backend, max_rows=24)
        torch.testing.assert_close(state.hidden, expected_hidden, atol=1e-4, rtol=0)
        torch.testing.assert_close(scores, expected, atol=1e-4, rtol=0)
    assert abs(float(expected.sum()) - 1.0) < 1e-5
    if peaked:
        assert float(expected.max() - expected.min()) > 0.05, "peaked model should not score uniformly"


@pytest.mark.parametrize("family", FAMILIES)
def test_early_exit_does_not_change_scores(family):
    model = tiny_model(family, peaked=True)
    layout = build_layout(random_prompt(5, seed=1), query_position_offset=16384)
    early, _ = packed_scores(model, layout, early_exit=True)
    full, state = packed_scores(model, layout, early_exit=False)
    torch.testing.assert_close(early, full, atol=0, rtol=0)
    assert state.logits is not None and state.logits.shape == (97,)


def test_reference_detects_wrong_layout_choices():
    """Signal count, query offset and padded document starts each move peaked scores far beyond 1e-4."""
    model = tiny_model("mistral", peaked=True)
    prompt = random_prompt(8, seed=5)
    layout = build_layout(prompt, query_position_offset=16384)
    right, _ = packed_scores(model, layout)
    one_signal, _ = packed_scores(model, layout, num_signal=1)
    other_offset, _ = packed_scores(model, build_layout(prompt, query_position_offset=8192))
    doc_rows = slice(layout.prefix_length, layout.query_start)
    shifted_positions = layout.position_ids.clone()
    shifted_positions[doc_rows] += 3  # documents starting at a padded prefix width instead of P
    padded_start, _ = packed_scores(model, dataclasses.replace(layout, position_ids=shifted_positions))
    for wrong in (one_signal, other_offset, padded_start):
        assert (right - wrong).abs().max() > 1e-3  # ten times the equivalence tolerance at least


@pytest.mark.parametrize("max_rows", [1, 30, 10_000])
def test_bucketing_does_not_change_scores(max_rows):
    model = tiny_model("llama", peaked=True)
    layout = build_layout(random_prompt(13, seed=7), query_position_offset=16384)
    reference, _ = packed_scores(model, layout, max_rows=10_000)
    scores, _ = packed_scores(model, layout, max_rows=max_rows)
    torch.testing.assert_close(scores, reference, atol=1e-5, rtol=0)

"""Positions and block structure of the packed stream, and document-order invariance of scores."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from blockrank_rerank.layout import build_layout

from conftest import random_prompt, tiny_model
from test_equivalence import packed_scores


def test_positions_restart_per_document_and_query_starts_at_offset():
    prompt = random_prompt(4, seed=2)
    layout = build_layout(prompt, query_position_offset=16384)
    p = len(prompt.prefix)
    assert layout.position_ids[:p].tolist() == list(range(p))
    for start, length in zip(layout.document_starts, layout.document_lengths):
        assert layout.position_ids[start : start + length].tolist() == list(range(p, p + length))
    assert layout.position_ids[layout.query_start :].tolist() == list(range(16384, 16384 + layout.query_length))
    assert build_layout(prompt, query_position_offset=0, causal_positions=True).position_ids.tolist() == list(
        range(layout.num_tokens)
    )


def test_mask_lets_documents_see_only_prefix_and_themselves():
    layout = build_layout(random_prompt(3, seed=4), query_position_offset=16384)
    allowed = layout.allowed()
    blocks = layout.block_ids
    for i in range(layout.num_tokens):
        for j in range(layout.num_tokens):
            bi, bj = int(blocks[i]), int(blocks[j])
            if bi == 0:
                expected = bj == 0 and j <= i
            elif bi <= 3:
                expected = bj == 0 or (bj == bi and j <= i)
            else:
                expected = j <= i
            assert bool(allowed[i, j]) == expected, (i, j)


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_scores_are_invariant_to_document_order_and_sum_to_one(family):
    model = tiny_model(family, peaked=True)
    prompt = random_prompt(10, seed=9)
    scores, _ = packed_scores(model, build_layout(prompt, query_position_offset=16384))
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    permuted = dataclasses.replace(prompt, documents=[prompt.documents[k] for k in order])
    permuted_scores, _ = packed_scores(model, build_layout(permuted, query_position_offset=16384))
    torch.testing.assert_close(permuted_scores, scores[order], atol=1e-5, rtol=0)
    assert abs(float(scores.sum()) - 1.0) < 1e-5 and bool((scores >= 0).all())

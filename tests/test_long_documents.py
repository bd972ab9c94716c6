"""long_documents="split" (issue 19): long documents continue in more blocks instead of being cut."""

from __future__ import annotations

import pytest
import torch

from blockrank_rerank import BlockRank
from blockrank_rerank.engine import document_of_blocks
from blockrank_rerank.tokenize import tokenize_prompt

QUERY = "what causes ocean tides"
SHORT = ["The Moon's gravity raises the tides.", "Stocks fell on Monday.", "Chess openings are many."]
LONG = "Tides rise and fall twice a day because the Moon and the Sun pull on the oceans. " * 30


def variant(default_ranker, **changes) -> BlockRank:
    engine = default_ranker.engine
    return BlockRank(engine.model, engine.tokenizer, default_ranker.config.replace(**changes))


def test_split_equals_truncate_when_no_document_is_long(default_ranker):
    split = variant(default_ranker, long_documents="split")
    assert split.score(QUERY, SHORT) == pytest.approx(default_ranker.score(QUERY, SHORT), abs=1e-7)


def test_a_long_document_becomes_consecutive_blocks_of_at_most_the_block_length(default_ranker):
    tokenizer, blocks = default_ranker.engine.tokenizer, default_ranker.config.max_block_tokens
    cut = tokenize_prompt(tokenizer, QUERY, [SHORT[0], LONG], blocks)
    split = tokenize_prompt(tokenizer, QUERY, [SHORT[0], LONG], blocks, max_blocks_per_document=3)
    assert cut.document_of_block == () and len(cut.documents) == 2 and cut.truncated_documents == (1,)
    assert split.document_of_block == (0, 1, 1, 1) and all(len(b) <= blocks for b in split.documents)
    assert split.documents[1] == cut.documents[1]  # the first block is what truncation kept
    assert (
        sum(split.documents[1:], [])
        == sum(tokenize_prompt(tokenizer, QUERY, [SHORT[0], LONG], 3 * blocks).documents[1:], [])[: 3 * blocks]
    )  # the blocks continue the same token stream


def test_split_scores_sum_per_document_and_max_takes_the_best_block(default_ranker):
    documents = [SHORT[1], LONG, SHORT[2]]
    summed = variant(default_ranker, long_documents="split", max_document_blocks=3, split_scores="sum")
    best = variant(default_ranker, long_documents="split", max_document_blocks=3, split_scores="max")
    engine = summed.engine
    layout = engine.layout(QUERY, documents)
    assert layout.document_of_block == (0, 1, 1, 1, 2)
    blocks = engine.score_layout(layout)  # (5,) one share per block
    scores = torch.tensor(summed.score(QUERY, documents))
    assert scores.tolist() == pytest.approx([float(blocks[0]), float(blocks[1:4].sum()), float(blocks[4])], abs=1e-6)
    assert float(scores.sum()) == pytest.approx(1.0, abs=1e-5)
    assert best.score(QUERY, documents) == pytest.approx(
        [float(blocks[0]), float(blocks[1:4].max()), float(blocks[4])], abs=1e-6
    )


def test_document_of_blocks_without_owners_is_the_identity():
    scores = torch.tensor([0.2, 0.8])
    assert document_of_blocks(scores, (), 2, "sum") is scores
    assert document_of_blocks(torch.tensor([0.1, 0.2, 0.7]), (0, 0, 1), 2, "max").tolist() == pytest.approx([0.2, 0.7])


@pytest.mark.parametrize(
    "field, bad", [("long_documents", "chunk"), ("split_scores", "mean"), ("max_document_blocks", 0)]
)
def test_bad_split_settings_are_value_errors(field, bad):
    from blockrank_rerank import BlockRankConfig

    with pytest.raises(ValueError, match=field):
        BlockRankConfig(**{field: bad})

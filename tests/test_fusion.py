"""Fusion with the first stage's order (issue 17): reciprocal ranks of the model and of the input order,
`input_order_weight` in the config, the CLI and the dev choice."""

from __future__ import annotations

import pytest
import torch

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank.evaluation.heads import DevQuery, choose_input_order_weight, fusion_ndcg, ideal_dcg
from blockrank_rerank.scoring import RRF_K, fuse_with_input_order


def order(scores: torch.Tensor) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


def test_weight_zero_keeps_the_models_order_and_one_the_inputs():
    scores = torch.tensor([0.1, 0.5, 0.05, 0.35])
    assert order(fuse_with_input_order(scores, 0.0)) == order(scores) == [1, 3, 0, 2]
    assert order(fuse_with_input_order(scores, 1.0)) == [0, 1, 2, 3]


def test_fused_value_is_the_weighted_sum_of_reciprocal_ranks():
    scores = torch.tensor([0.2, 0.7, 0.1])  # model ranks 2, 1, 3; input ranks 1, 2, 3
    fused = fuse_with_input_order(scores, 0.3)
    expected = [0.7 / (RRF_K + m) + 0.3 / (RRF_K + i) for m, i in ((2, 1), (1, 2), (3, 3))]
    assert fused.tolist() == pytest.approx(expected, rel=1e-12)


def test_model_ties_break_by_input_index():
    fused = fuse_with_input_order(torch.tensor([0.25, 0.25, 0.25, 0.25]), 0.0)
    assert order(fused) == [0, 1, 2, 3] and bool((fused[:-1] > fused[1:]).all())


def test_half_weight_puts_agreement_first():
    """A document both rankings put second beats the first of each ranking when the other puts it last."""
    scores = torch.tensor([0.01, 0.3, 0.05, 0.05, 0.59])  # model: 4, 1, 2, 3, 0; input: 0, 1, 2, 3, 4
    fused = fuse_with_input_order(scores, 0.5)
    assert order(fused)[0] == 1


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.5", float("nan")])
def test_bad_input_order_weight_is_a_value_error(bad):
    with pytest.raises(ValueError, match="input_order_weight"):
        BlockRankConfig(input_order_weight=bad)


def test_reranker_fuses_its_shares_with_the_input_order(default_ranker):
    engine = default_ranker.engine
    fused = BlockRank(engine.model, engine.tokenizer, default_ranker.config.replace(input_order_weight=0.4))
    documents = ["Paris is the capital of France.", "Stocks fell.", "France borders Spain.", "Cats purr.", "Lyon"]
    query = "what is the capital of france"
    shares = torch.tensor(default_ranker.score(query, documents))
    expected = fuse_with_input_order(shares, 0.4)
    assert fused.score(query, documents) == pytest.approx(expected.tolist(), rel=1e-6)
    assert [d.index for d in fused.rerank(query, documents)] == order(expected)


def dev_queries(count: int = 16, n: int = 20) -> list[DevQuery]:
    """Dev queries whose first stage finds the relevant documents and whose model shares are noise."""
    g = torch.Generator().manual_seed(1)
    queries = []
    for k in range(count):
        shares = torch.rand(1, 2, n, generator=g).softmax(dim=-1)  # (L=1, H=2, N)
        gains = torch.zeros(n)
        gains[:2] = torch.tensor([2.0, 1.0])  # the first stage's top two are the relevant ones
        queries.append(DevQuery("dev", str(k), shares, gains, ideal_dcg([2, 1])))
    return queries


def test_dev_choice_follows_the_better_ranking():
    """With a useless model the first stage's order wins: the chosen weight is 1 and holds out of fold."""
    queries = dev_queries()
    readout = torch.ones(1, 2)
    per_weight = fusion_ndcg(queries, readout)
    assert per_weight[1.0] == pytest.approx(1.0) and per_weight[0.0] < 0.5
    choice = choose_input_order_weight(queries, readout)
    assert choice["input_order_weight"] == 1.0
    assert choice["two_fold"]["held_out_chosen"] == pytest.approx(choice["two_fold"]["held_out_first_stage"])

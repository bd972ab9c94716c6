"""The report generator (bench/make_results.py): row labels, block settings and the list of runs still missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_results = load_script("make_results")
TRAINED = make_results.TRAINED_MODELS[0]


def summary(
    method: str, n: int, model: str = "embedded:smollm2-135m-instruct", seconds: float = 10.0, **settings
) -> dict:
    return {
        "method": method,
        "dataset": "scifact-test",
        "depth": 100,
        "num_queries": n,
        "qids": [str(i) for i in range(n)],
        "seconds_per_query": {"mean": seconds, "median": seconds},
        "settings": {"model": model, **settings},
    }


def test_lm_methods_of_a_trained_model_get_their_own_rows():
    assert make_results.row_method(summary("blockrank", 1, TRAINED)) == "blockrank-trained"
    assert make_results.row_method(summary("icr", 1, TRAINED)) == "icr-trained"
    assert make_results.row_method(summary("icr", 1)) == "icr"
    assert make_results.row_method(summary("pointwise", 1, TRAINED)) == "pointwise-trained"
    assert make_results.row_method(summary("biencoder", 1, TRAINED)) == "biencoder"  # no LM: the model setting is moot


def test_block_settings_name_cap_offset_and_a_non_default_dtype():
    base = dict(max_block_tokens=160, query_position_offset=16384)
    assert make_results.block_settings(summary("icr", 1, **base, dtype="float32")) == "blocks ≤ 160, query at 16384"
    assert (
        make_results.block_settings(summary("icr", 1, **base, dtype="bfloat16"), short=True) == "b160 q@16384 bfloat16"
    )
    assert (
        make_results.block_settings(summary("icr", 1, max_block_tokens=384, query_position_offset=None), short=True)
        == "b384 q@P+b"
    )
    assert make_results.block_settings(summary("biencoder", 1)) == ""


def test_a_cached_bi_encoder_run_says_its_time_is_amortised():
    cached = summary("biencoder", 1, document_embedding_cache=True)
    assert "amortised" in make_results.row_name(cached) and make_results.run_note(cached, short=True) == "cached"
    assert make_results.run_note(summary("biencoder", 1)) == ""


def test_coverage_gaps_report_the_largest_partial_run_and_missing_expected_modes():
    summaries = [
        summary("blockrank-trained", 300),
        summary("icr-trained", 20, seconds=30.0),
        summary("icr-trained", 120, seconds=36.0),
    ]
    lines = make_results.coverage_gaps(summaries, "scifact-test", 100, 300)
    assert not any(line.startswith(f"- {make_results.METHOD_NAMES['blockrank-trained']},") for line in lines)
    icr = [line for line in lines if line.startswith(f"- {make_results.METHOD_NAMES['icr-trained']},")]
    assert len(icr) == 1 and "120 of 300" in icr[0] and "3.0 h" in icr[0]  # 36 s x 300 queries
    assert any("bi-encoder" in line and "not run yet" in line for line in lines)


def test_every_committed_summary_has_a_row_name():
    for s in make_results.load_summaries():
        assert s["method"] in make_results.METHOD_ORDER, s["file"]
        assert make_results.row_name(s)

"""`blockrank batch-rerank` without Ray: readers, shards, the local engine against `rerank`, resuming after a stop
and after a kill, and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_support import (
    assert_matches_rerank,
    read_results,
    save_tiny_model,
    synthetic_queries,
    trec_qids_and_docs,
    write_jsonl,
)
from conftest import require_data

from blockrank_rerank import BlockRank
from blockrank_rerank.batch import LocalEngine, dataset_queries, read_jsonl_queries, run_batch
from blockrank_rerank.batch.shards import plan_shards
from blockrank_rerank.cli import main


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    """A tiny random model on disk."""
    return save_tiny_model(tmp_path_factory.mktemp("batch") / "tiny")


@pytest.fixture(scope="module")
def tiny_ranker(tiny_path) -> BlockRank:
    """The tiny model loaded once for the module."""
    return BlockRank.from_pretrained(str(tiny_path))


def run_local(queries, output, ranker, model, **kwargs):
    """A job on the local engine with an already loaded ranker (`model` is what the manifest records)."""
    top_k = kwargs.pop("top_k", None)
    engine = LocalEngine(model, top_k=top_k, ranker=ranker)
    return run_batch(queries, output, engine, model=model, top_k=top_k, show_progress=False, **kwargs)


def test_jsonl_reader_accepts_ids_and_strings_and_names_bad_lines(tmp_path):
    queries = synthetic_queries(4)
    path = write_jsonl(queries, tmp_path / "in.jsonl")
    assert read_jsonl_queries(path) == queries
    bad = {
        '{"qid": "a", "query": "q"}': "'candidates'",
        "{oops": "not valid JSON",
        '{"qid": "a b", "query": "q", "candidates": []}': "whitespace",
        '{"qid": "a", "query": " ", "candidates": []}': "query",
        '{"qid": "a", "query": "q", "candidates": [{"id": "x y", "text": "t"}]}': "whitespace",
        '{"qid": "a", "query": "q", "candidates": [{"id": "x"}]}': "text",
        '{"qid": "a", "query": "q", "candidates": "text"}': "must be a list",
    }
    for line, message in bad.items():
        path.write_text('{"qid": 1, "query": "fine", "candidates": ["ok"]}\n' + line + "\n")
        with pytest.raises(ValueError, match=message) as error:
            read_jsonl_queries(path)
        assert "line 2" in str(error.value)
    path.write_text('{"qid": 1, "query": "q", "candidates": []}\n{"qid": "1", "query": "q", "candidates": []}\n')
    with pytest.raises(ValueError, match="more than once"):
        read_jsonl_queries(path)


def test_dataset_queries_cut_the_harness_run_to_depth():
    require_data("trec-dl", "dl19-bm25-top100.json.gz")
    queries = dataset_queries("dl19", depth=3, num_queries=2)
    assert len(queries) == 2 and all(len(q.documents) == 3 for q in queries)
    assert queries[0].qid < queries[1].qid and all(isinstance(d["id"], str) for d in queries[0].documents)


def test_shards_cover_every_query_once_in_order():
    queries = synthetic_queries(7)
    shards = plan_shards(queries, 3)
    assert [len(s.queries) for s in shards] == [3, 3, 1]
    assert [qid for s in shards for qid in s.qids] == [q.qid for q in queries]
    with pytest.raises(ValueError, match="shard_size"):
        plan_shards(queries, 0)


def test_local_engine_equals_rerank_per_query_and_writes_a_trec_run(tmp_path, tiny_ranker, tiny_path):
    queries = synthetic_queries(9)
    summary = run_local(queries, tmp_path / "out", tiny_ranker, str(tiny_path), shard_size=4)
    assert summary.complete and summary.queries == 9 and summary.shards == 3
    assert summary.documents == sum(len(q.documents) for q in queries)
    results = read_results(tmp_path / "out")
    assert_matches_rerank(results, queries, tiny_ranker)
    expected = [(r["qid"], str(d["id"] if d["id"] is not None else d["index"])) for r in results for d in r["ranking"]]
    assert trec_qids_and_docs(tmp_path / "out") == expected
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["complete"] is True
    cut = run_local(queries, tmp_path / "top2", tiny_ranker, str(tiny_path), shard_size=4, top_k=2)
    assert cut.complete and all(len(r["ranking"]) <= 2 for r in read_results(tmp_path / "top2"))


def test_stopped_job_resumes_to_the_uninterrupted_output(tmp_path, tiny_ranker, tiny_path):
    queries, model = synthetic_queries(10), str(tiny_path)
    run_local(queries, tmp_path / "whole", tiny_ranker, model, shard_size=3)
    first = run_local(queries, tmp_path / "resumed", tiny_ranker, model, shard_size=3, max_shards=2)
    assert not first.complete and first.shards == 2 and not (tmp_path / "resumed" / "results.jsonl").exists()
    second = run_local(queries, tmp_path / "resumed", tiny_ranker, model, shard_size=3)
    assert second.complete and second.skipped_shards == 2 and second.shards == 2 and second.queries == 4
    for name in ("results.jsonl", "run.trec"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    again = run_local(queries, tmp_path / "resumed", tiny_ranker, model, shard_size=3)
    assert again.complete and again.shards == 0 and again.skipped_shards == 4


def test_an_output_directory_of_another_job_or_a_tampered_shard_is_refused(tmp_path, tiny_ranker, tiny_path):
    queries, model = synthetic_queries(5), str(tiny_path)
    run_local(queries, tmp_path / "out", tiny_ranker, model, shard_size=2)
    with pytest.raises(ValueError, match="shard_size"):
        run_local(queries, tmp_path / "out", tiny_ranker, model, shard_size=3)
    with pytest.raises(ValueError, match="input_sha256"):
        run_local(synthetic_queries(5, seed=1), tmp_path / "out", tiny_ranker, model, shard_size=2)
    shard = tmp_path / "out" / "shards" / "shard-000001.jsonl"
    shard.write_text(shard.read_text().splitlines()[0] + "\n")  # one query of two
    with pytest.raises(ValueError, match="other queries"):
        run_local(queries, tmp_path / "out", tiny_ranker, model, shard_size=2)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a batch-rerank output"):
        run_local(queries, tmp_path / "other", tiny_ranker, model, shard_size=2)


def test_killed_job_resumes_without_duplicates_or_gaps(tmp_path, tiny_ranker, tiny_path):
    """SIGKILL the command mid-run (no cleanup can run), rerun it: the output equals an uninterrupted run."""
    queries = synthetic_queries(60, documents=4)
    source = write_jsonl(queries, tmp_path / "in.jsonl")
    output, shards_dir = tmp_path / "killed", tmp_path / "killed" / "shards"
    command = [
        sys.executable, "-m", "blockrank_rerank.cli", "batch-rerank", "--input", str(source), "--output",
        str(output), "--model", str(tiny_path), "--shard-size", "1", "--no-progress", "--dtype", "float32",
    ]  # fmt: skip  (float32: dtype=auto would resolve by this CPU in the child, float32 in this process)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if shards_dir.is_dir() and len(list(shards_dir.glob("shard-*.jsonl"))) >= 2:
            break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = len(list(shards_dir.glob("shard-*.jsonl")))
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    assert 2 <= written < len(queries) and not (output / "results.jsonl").exists()
    assert main(["batch-rerank", "--input", str(source), "--output", str(output), "--model", str(tiny_path),
                 "--shard-size", "1", "--no-progress", "--dtype", "float32"]) == 0  # fmt: skip
    summary = json.loads((output / "summary.json").read_text())
    assert summary["skipped_shards"] >= written and summary["queries"] == len(queries) - summary["skipped_shards"]
    reference = run_local(queries, tmp_path / "whole", tiny_ranker, str(tiny_path), shard_size=1)
    assert reference.complete
    assert (output / "results.jsonl").read_bytes() == (tmp_path / "whole" / "results.jsonl").read_bytes()
    assert [r["qid"] for r in read_results(output)] == [q.qid for q in queries]
    assert not list(shards_dir.glob(".*.tmp"))


def test_command_line_writes_results_and_a_summary(tmp_path, capsys, tiny_path):
    source = write_jsonl(synthetic_queries(5), tmp_path / "in.jsonl")
    argv = ["batch-rerank", "--input", str(source), "--output", str(tmp_path / "out"), "--model", str(tiny_path)]
    assert main([*argv, "--shard-size", "2", "--top-k", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "5 queries" in out and "queries/s" in out and "results.jsonl" in out
    assert [r["qid"] for r in read_results(tmp_path / "out")] == [f"q{i}" for i in range(5)]


def test_command_line_errors_are_one_line(tmp_path, capsys, monkeypatch, tiny_path):
    source = write_jsonl(synthetic_queries(2), tmp_path / "in.jsonl")
    argv = ["batch-rerank", "--input", str(source), "--output", str(tmp_path / "out"), "--model", str(tiny_path)]
    assert main([*argv, "--workers", "2"]) == 2
    assert "need --engine ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    assert main([*argv, "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("blockrank: error:") and 'pip install "blockrank-rerank[ray]"' in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    assert main(["batch-rerank", "--output", str(tmp_path / "out")]) == 2
    assert "--input" in capsys.readouterr().err


def test_core_does_not_import_ray():
    code = "import sys, blockrank_rerank, blockrank_rerank.batch, blockrank_rerank.cli; print('ray' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "False"

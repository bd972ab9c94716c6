"""`blockrank batch-rerank --engine ray` on a real local Ray instance limited to 2 CPUs (started once for the
module): the same output as the local engine and as `BlockRank.rerank`, with a tiny model and with the default model
on DL19, and resuming a stopped job on either engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from batch_support import (
    assert_matches_rerank,
    assert_same_results,
    read_results,
    save_tiny_model,
    synthetic_queries,
    write_jsonl,
)
from conftest import require_data

from blockrank_rerank import BlockRank
from blockrank_rerank.batch import LocalEngine, dataset_queries, run_batch
from blockrank_rerank.batch.ray_engine import RayEngine
from blockrank_rerank.cli import main

ray = pytest.importorskip("ray")  # the test extra installs it; only a hand-made environment lacks it
FLOAT32 = {"dtype": "float32"}  # Ray actors are processes of their own, where dtype=auto would resolve by this CPU


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance with 2 CPUs for every test here; the engine uses it instead of starting its own."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    """A tiny random model on disk, loadable by path in the Ray actors."""
    return save_tiny_model(tmp_path_factory.mktemp("batch_ray") / "tiny")


@pytest.fixture(scope="module")
def tiny_ranker(tiny_path) -> BlockRank:
    """The tiny model loaded once in this process."""
    return BlockRank.from_pretrained(str(tiny_path))


def test_ray_command_equals_local_engine_and_rerank_with_a_tiny_model(tmp_path, capsys, tiny_path, tiny_ranker):
    queries = synthetic_queries(10)
    source = write_jsonl(queries, tmp_path / "in.jsonl")
    argv = ["batch-rerank", "--input", str(source), "--model", str(tiny_path), "--shard-size", "3", "--no-progress"]
    argv += ["--dtype", "float32"]  # as FLOAT32
    assert main([*argv, "--output", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "engine ray, 2 worker(s)" in out and out.count("  worker ") == 2  # both actors took shards
    local = run_batch(
        queries,
        tmp_path / "local",
        LocalEngine(str(tiny_path), FLOAT32, ranker=tiny_ranker),
        model=str(tiny_path),
        overrides=FLOAT32,
        shard_size=3,
        show_progress=False,
    )
    assert local.complete
    assert_same_results(read_results(tmp_path / "ray"), read_results(tmp_path / "local"))
    assert_matches_rerank(read_results(tmp_path / "ray"), queries, tiny_ranker)


def test_ray_equals_local_and_rerank_with_the_default_model_on_dl19(tmp_path, default_ranker):
    require_data("trec-dl", "dl19-bm25-top100.json.gz")
    queries = dataset_queries("dl19", depth=5, num_queries=3)
    ray_summary = run_batch(
        queries, tmp_path / "ray", RayEngine(None, FLOAT32, workers=2), shard_size=1, show_progress=False
    )
    assert ray_summary.complete and ray_summary.queries == 3 and ray_summary.documents == 15
    local_engine = LocalEngine(ranker=default_ranker)
    local = run_batch(queries, tmp_path / "local", local_engine, shard_size=1, show_progress=False)
    assert local.complete
    assert_same_results(read_results(tmp_path / "ray"), read_results(tmp_path / "local"))
    assert_matches_rerank(read_results(tmp_path / "ray"), queries, default_ranker)


def test_stopped_ray_job_resumes_to_the_uninterrupted_output_on_either_engine(tmp_path, tiny_path, tiny_ranker):
    queries, model = synthetic_queries(8), str(tiny_path)
    ray_engine, local_engine = RayEngine(model, FLOAT32, workers=2), LocalEngine(model, FLOAT32, ranker=tiny_ranker)
    options = {"model": model, "overrides": FLOAT32, "shard_size": 2, "show_progress": False}
    first = run_batch(queries, tmp_path / "out", ray_engine, max_shards=1, **options)
    assert not first.complete and first.shards == 1
    middle = run_batch(queries, tmp_path / "out", local_engine, max_shards=1, **options)
    assert not middle.complete and middle.skipped_shards == 1 and middle.shards == 1
    last = run_batch(queries, tmp_path / "out", ray_engine, **options)
    assert last.complete and last.skipped_shards == 2 and last.shards == 2
    whole = run_batch(queries, tmp_path / "whole", local_engine, **options)
    assert whole.complete
    results = read_results(tmp_path / "out")
    assert [r["qid"] for r in results] == [q.qid for q in queries]
    assert_same_results(results, read_results(tmp_path / "whole"))


def test_a_pool_larger_than_a_local_instance_is_refused_before_waiting():
    with pytest.raises(ValueError, match="need 3 CPUs; the Ray cluster has 2"):
        RayEngine(workers=3)._check_resources(local=True)
    with pytest.raises(ValueError, match="GPU"):
        RayEngine(workers=1, gpus_per_worker=1)._check_resources(local=True)
    with pytest.raises(ValueError, match="workers"):
        RayEngine(workers=0)


def test_a_model_the_workers_cannot_load_is_one_clear_error(tmp_path, capsys):
    source = write_jsonl(synthetic_queries(2), tmp_path / "in.jsonl")
    argv = ["batch-rerank", "--input", str(source), "--output", str(tmp_path / "out"), "--engine", "ray"]
    assert main([*argv, "--model", str(tmp_path / "no-such-model"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("blockrank: error: a Ray worker could not load the model"), err[-1]
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_the_command_joins_a_running_cluster_by_address(tmp_path, tiny_path, tiny_ranker):
    """A second driver (the command, in its own process) connects to this module's Ray by address, starts nothing."""
    queries = synthetic_queries(4)
    source = write_jsonl(queries, tmp_path / "in.jsonl")
    address = ray.get_runtime_context().gcs_address
    command = [
        sys.executable, "-m", "blockrank_rerank.cli", "batch-rerank", "--input", str(source), "--output",
        str(tmp_path / "out"), "--model", str(tiny_path), "--engine", "ray", "--workers", "2", "--ray-address",
        address, "--shard-size", "2", "--no-progress", "--dtype", "float32",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "engine ray, 2 worker(s)" in done.stdout
    assert_matches_rerank(read_results(tmp_path / "out"), queries, tiny_ranker)
    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2  # the cluster outlived the command

"""One shared reranker under concurrent use (8 threads) and bit-identical repeat runs.

The adapters' async paths under concurrent calls: test_adapter_contract.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from blockrank_rerank import BlockRank
from conftest import THREADS, concurrent_requests

REQUESTS = concurrent_requests(THREADS)


def test_eight_threads_on_one_ranker_match_sequential_use(default_ranker, forward_watch):
    sequential = [default_ranker.rerank(q, docs).to_dicts() for q, docs in REQUESTS]
    barrier = threading.Barrier(THREADS)

    def worker(offset: int) -> list[tuple[int, list]]:
        barrier.wait()  # start together
        return [(i, default_ranker.rerank(*REQUESTS[i]).to_dicts()) for i in range(offset, len(REQUESTS), THREADS)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = dict(item for future in [pool.submit(worker, t) for t in range(THREADS)] for item in future.result())
    assert [results[i] for i in range(len(REQUESTS))] == sequential  # identical floats, not merely close
    assert forward_watch["most"] == 1, "two forwards ran on one model at once"


def test_repeated_calls_are_bit_identical_one_shot_and_chunked(default_ranker):
    query, docs = REQUESTS[0]
    first, second = default_ranker.score(query, docs), default_ranker.score(query, docs)
    assert [s.hex() for s in first] == [s.hex() for s in second]
    layout = default_ranker.engine.layout(query, docs)
    chunked = BlockRank(
        default_ranker.engine.model,
        default_ranker.engine.tokenizer,
        default_ranker.config.replace(memory_budget_mb=1e-3),
    )
    assert chunked.engine.execution_plan(layout).chunked
    assert torch.equal(chunked.engine.score_layout(layout), chunked.engine.score_layout(layout))


def _scores_in_a_fresh_process() -> list[str]:
    query, docs = REQUESTS[0]
    code = (
        "import json, sys; from blockrank_rerank import BlockRank; "
        "ranker = BlockRank.from_pretrained(dtype='float32'); "  # float32, as dtype=auto resolves in this process
        f"print(json.dumps([s.hex() for s in ranker.score({query!r}, {docs!r})]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_scores_are_bit_identical_across_processes(default_ranker):
    query, docs = REQUESTS[0]
    here = [s.hex() for s in default_ranker.score(query, docs)]
    assert _scores_in_a_fresh_process() == here

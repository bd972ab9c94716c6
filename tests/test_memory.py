"""Measured memory of chunked scoring stays within `memory_budget_mb`, where the one-shot path would not.

Each measurement runs in a fresh interpreter (this file run as a script) on a small random Llama and 1,000
random documents of 50 tokens (~50k tokens). Peak memory is the kernel's resident-set high-water mark
(VmHWM), reset just before the scoring call, minus the resident set at that moment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

NUM_DOCUMENTS = 1000
CHUNKED_BUDGET_MB = 120  # hidden states (50 MB) fit in half of it: kept in memory
SPILL_BUDGET_MB = 80  # they do not: spilled to a temporary file


def measure(budget: float | None) -> dict:
    """Score the fixed random prompt under `budget` in this process; peak memory of the call and the scores."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from blockrank_rerank import BlockRank, BlockRankConfig
    from blockrank_rerank.layout import build_layout
    from blockrank_rerank.tokenize import TokenizedPrompt

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=32768,
    )
    model = LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, 97, (n,), generator=g).tolist()  # noqa: E731
    prompt = lambda n: TokenizedPrompt(ids(40), [ids(50) for _ in range(n)], ids(30), "q", ())  # noqa: E731
    layout, warm = (
        build_layout(prompt(NUM_DOCUMENTS), query_position_offset=16384),
        build_layout(prompt(3), query_position_offset=16384),
    )
    config = BlockRankConfig(scoring_layer=1, memory_budget_mb=budget, dtype="float32")  # the budgets' dtype
    ranker = BlockRank(model, None, config)
    ranker.engine.score_layout(warm)
    plan = ranker.engine.execution_plan(layout)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    start = _status("VmRSS")
    scores = ranker.engine.score_layout(layout)
    return {
        "peak_mb": (_status("VmHWM") - start) / 1024,
        "chunked": plan.chunked,
        "spill": plan.spill,
        "scores": scores.tolist(),
    }


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def run_measurement(budget: float | None) -> dict:
    out = subprocess.run([sys.executable, __file__, json.dumps(budget)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def measurements():
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to reset the resident-set high-water mark")
    return {budget: run_measurement(budget) for budget in (None, CHUNKED_BUDGET_MB, SPILL_BUDGET_MB)}


def test_chunked_peak_is_within_the_budget_and_one_shot_is_not(measurements):
    one_shot, chunked = measurements[None], measurements[CHUNKED_BUDGET_MB]
    assert not one_shot["chunked"] and chunked["chunked"] and not chunked["spill"]
    assert chunked["peak_mb"] <= CHUNKED_BUDGET_MB, chunked["peak_mb"]
    assert one_shot["peak_mb"] > 2 * CHUNKED_BUDGET_MB, "the budget must bind: without chunking the call needs far more"
    torch.testing.assert_close(torch.tensor(chunked["scores"]), torch.tensor(one_shot["scores"]), atol=1e-5, rtol=0)


def test_spilled_peak_is_within_the_smaller_budget(measurements):
    spilled = measurements[SPILL_BUDGET_MB]
    assert spilled["chunked"] and spilled["spill"]
    assert spilled["peak_mb"] <= SPILL_BUDGET_MB, spilled["peak_mb"]
    torch.testing.assert_close(
        torch.tensor(spilled["scores"]), torch.tensor(measurements[None]["scores"]), atol=1e-5, rtol=0
    )


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))

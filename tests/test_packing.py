"""Multi-query packing (issue 18): several queries' prompts in one forward give each the scores of its own forward."""

from __future__ import annotations

import pytest
import torch

from blockrank_rerank import BlockRank, BlockRankConfig, forward
from blockrank_rerank.attention import PromptPack, attend, plan_attention
from blockrank_rerank.layout import build_layout

from conftest import FAMILIES, random_prompt, tiny_model


def tiny_ranker(family: str, **overrides) -> BlockRank:
    config = BlockRankConfig(device="cpu", dtype="float32", scoring_layer=2, **overrides)
    return BlockRank(tiny_model(family, peaked=True), None, config)


def layouts(count: int, seed: int = 0) -> list:
    """Prompts of uneven sizes (2..9 documents of 1..12 tokens), the kind one rerank_batch call brings."""
    return [
        build_layout(random_prompt(2 + (seed + k) % 8, seed=seed * 100 + k), query_position_offset=16384)
        for k in range(count)
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_readings_equal_one_prompt_at_a_time(family):
    engine = tiny_ranker(family).engine
    prompts = layouts(5)
    assert [len(pack) for pack in engine.packs(prompts)] == [5]
    packed = engine.read_layouts(prompts)
    for layout, readings in zip(prompts, packed):
        alone = engine.read_layout(layout)
        assert readings.shares.shape == (layout.num_documents,)
        torch.testing.assert_close(readings.shares, alone.shares, atol=1e-5, rtol=0)
        torch.testing.assert_close(readings.relevance_logits, alone.relevance_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["torch", "dense", "flex"])
def test_every_backend_attends_within_each_prompt_only(backend):
    """The packed attention output equals each prompt's own, so no prompt's rows see another prompt's keys."""
    prompts = layouts(3, seed=2)
    plans = [plan_attention(layout) for layout in prompts]
    total = sum(layout.num_tokens for layout in prompts)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(heads, total, 8, generator=g) for heads in (4, 2, 2))  # (H, T, D), (Hkv, T, D) x2
    packed = attend(backend, q, k, v, PromptPack(tuple(plans)), 0.35)  # (H, T, D)
    start = 0
    for plan in plans:
        rows = slice(start, start + plan.layout.num_tokens)
        alone = attend(backend, q[:, rows].contiguous(), k[:, rows].contiguous(), v[:, rows].contiguous(), plan, 0.35)
        torch.testing.assert_close(packed[:, rows], alone, atol=1e-5, rtol=0)
        start = rows.stop
    assert start == total


def test_packs_respect_the_token_limit_the_memory_budget_and_the_mode():
    prompts = layouts(6, seed=1)
    sizes = [layout.num_tokens for layout in prompts]
    engine = tiny_ranker("llama", max_pack_tokens=sizes[0] + sizes[1]).engine
    packs = engine.packs(prompts)
    assert [id(layout) for pack in packs for layout in pack] == list(map(id, prompts))  # order kept, none lost
    assert all(sum(layout.num_tokens for layout in pack) <= sizes[0] + sizes[1] for pack in packs if len(pack) > 1)
    assert len(packs[0]) == 2
    assert [len(pack) for pack in tiny_ranker("llama", max_pack_tokens=0).engine.packs(prompts)] == [1] * 6
    assert [len(pack) for pack in tiny_ranker("llama", scoring_mode="icr").engine.packs(prompts)] == [1] * 6
    one = tiny_ranker("llama", memory_budget_mb=1e-4).engine  # every prompt alone exceeds it: chunked, never packed
    assert [len(pack) for pack in one.packs(prompts)] == [1] * 6
    shape = engine.shape
    two = (shape.fixed_bytes + (sizes[0] + sizes[1]) * shape.bytes_per_token) / (1 << 20)
    budgeted = tiny_ranker("llama", memory_budget_mb=two).engine.packs(prompts)
    assert len(budgeted[0]) == 2 and sum(layout.num_tokens for layout in budgeted[0]) == sizes[0] + sizes[1]


def test_a_prompt_over_the_limit_runs_alone_between_packs():
    small = layouts(4, seed=3)
    big = build_layout(random_prompt(30, seed=9), query_position_offset=16384)
    prompts = [small[0], small[1], big, small[2], small[3]]
    limit = max(a.num_tokens + b.num_tokens for a, b in zip(small[::2], small[1::2]))
    assert big.num_tokens > limit
    engine = tiny_ranker("qwen2", max_pack_tokens=limit).engine
    assert [len(pack) for pack in engine.packs(prompts)] == [2, 1, 2]
    for readings, layout in zip(engine.read_layouts(prompts), prompts):
        torch.testing.assert_close(readings.shares, engine.read_layout(layout).shares, atol=1e-5, rtol=0)


def test_max_pack_tokens_is_validated():
    with pytest.raises(ValueError, match="max_pack_tokens"):
        BlockRankConfig(max_pack_tokens=-1)


def test_rerank_batch_packs_and_equals_rerank_of_each_query(default_ranker, monkeypatch):
    queries = ["what do cats eat", "stock market crash 1929", "how tall is mount everest", "rainfall in spain"]
    documents = [
        ["Cats are obligate carnivores.", "Dogs eat many things.", "Cats drink water.", "Tigers hunt at night."],
        ["The crash of 1929 began in October.", "Bonds rose.", "The Great Depression followed the crash."],
        ["Everest is 8,849 metres tall.", "K2 is the second highest mountain.", "Everest is 8,849 metres tall."],
        ["Rain in Spain stays mainly in the plain."],  # one document: a forward for its relevance score only
    ]
    forwards = []
    run_layers = forward.run_layers
    monkeypatch.setattr(forward, "run_layers", lambda *args: forwards.append(args[1]) or run_layers(*args))
    packed = default_ranker.rerank_batch(queries, documents, batch_size=4)
    assert len(forwards) == 1 and isinstance(forwards[0].plan, PromptPack)
    alone = [default_ranker.rerank(query, docs) for query, docs in zip(queries, documents)]
    assert len(forwards) == 5
    for batch_list, single in zip(packed, alone):
        assert [d.index for d in batch_list] == [d.index for d in single]
        for a, b in zip(batch_list, single):
            assert a.score == pytest.approx(b.score, abs=1e-5)
            assert a.relevance_score == pytest.approx(b.relevance_score, abs=1e-5)
    assert packed[2][0].score == pytest.approx(packed[2][1].score)  # copies share a score inside a pack too


def test_rerank_batch_validates_batch_size_and_handles_empty_lists(default_ranker):
    with pytest.raises(ValueError, match="batch_size"):
        default_ranker.rerank_batch(["q"], [["d"]], batch_size=0)
    ranked = default_ranker.rerank_batch(["a", "b", "c"], [[], ["x", "y"], []], batch_size=2)
    assert [len(r) for r in ranked] == [0, 2, 0]

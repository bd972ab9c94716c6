"""The embedded default model (SmolLM2-135M-Instruct) on real DL19 BM25 candidates."""

from __future__ import annotations

import pytest
import torch

from blockrank_rerank.evaluation.data import load_trec_dl
from blockrank_rerank.reference import dense_reference

from conftest import require_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dl19():
    require_data("trec-dl", "dl19-bm25-top100.json.gz")
    return load_trec_dl("dl19")


def test_dl19_query_is_ranked(default_ranker, dl19):
    qid = next(iter(dl19.queries))
    candidates = dl19.candidates[qid][:20]
    result = default_ranker.rerank(dl19.queries[qid], [{"id": c.docid, "text": c.text} for c in candidates])
    assert len(result) == 20 and sorted(d.index for d in result) == list(range(20))
    scores = torch.tensor([d.score for d in result])
    assert abs(float(scores.sum()) - 1) < 1e-4
    assert float(scores.max()) > 2 * float(scores.min()), "a pretrained model's attention is not uniform"


def test_real_model_matches_dense_reference(default_ranker, dl19):
    qid = list(dl19.queries)[1]
    layout = default_ranker.engine.layout(dl19.queries[qid], [c.text for c in dl19.candidates[qid][:6]])
    expected, _ = dense_reference(default_ranker.engine.model, layout, default_ranker.engine.scoring_layer, 2)
    torch.testing.assert_close(default_ranker.engine.score_layout(layout), expected, atol=1e-4, rtol=0)


def test_shipped_adapter_is_the_default_and_the_base_stays_selectable(default_ranker, dl19):
    from blockrank_rerank import BlockRank
    from blockrank_rerank.loading import EMBEDDED_BASE, EMBEDDED_TRAINED
    from blockrank_rerank.evaluation.metrics import compute_metrics, ranks_to_scores

    assert default_ranker.engine.name == EMBEDDED_TRAINED and default_ranker.engine.scoring_layer == 19
    base = BlockRank.from_pretrained(EMBEDDED_BASE)
    trained_layers, base_layers = default_ranker.engine.model.model.layers, base.engine.model.model.layers
    assert not torch.equal(trained_layers[0].self_attn.q_proj.weight, base_layers[0].self_attn.q_proj.weight)
    assert torch.equal(
        trained_layers[25].mlp.up_proj.weight, base_layers[25].mlp.up_proj.weight
    )  # LoRA covers 0..L* only
    # The adapter reads blocks as trained (160 tokens, query at 16384); the base puts the query right after the
    # longest block.
    assert default_ranker.config.max_block_tokens == 160
    trained_layout, base_layout = (
        r.engine.layout("what is rba", ["a short passage", "another one"]) for r in (default_ranker, base)
    )
    assert int(trained_layout.position_ids[trained_layout.query_start]) == 16384
    assert (
        int(base_layout.position_ids[base_layout.query_start])
        == base_layout.prefix_length + base.config.max_block_tokens
    )
    qids = list(dl19.queries)[:5]
    runs = {}
    for name, ranker in (("trained", default_ranker), ("base", base)):
        runs[name] = {}
        for qid in qids:
            candidates = dl19.candidates[qid][:20]
            result = ranker.rerank(dl19.queries[qid], [{"id": c.docid, "text": c.text} for c in candidates])
            runs[name][qid] = ranks_to_scores([d.id for d in result])
    trained = compute_metrics(runs["trained"], dl19.qrels, 20, 2)["nDCG@10"]
    untrained = compute_metrics(runs["base"], dl19.qrels, 20, 2)["nDCG@10"]
    assert trained > untrained, f"trained nDCG@10 {trained:.3f} should beat the untrained base's {untrained:.3f}"


def test_chunked_matches_one_shot_on_the_real_model(default_ranker, dl19):
    """Exact chunking on real text: 50 BM25 passages in chunks of at most 1,200 tokens, against the one-shot path."""
    from blockrank_rerank.chunked import chunked_scores

    qid = list(dl19.queries)[2]
    layout = default_ranker.engine.layout(dl19.queries[qid], [c.text for c in dl19.candidates[qid][:50]])
    with torch.inference_mode():
        got = chunked_scores(default_ranker.engine.model, layout, default_ranker.engine.scoring_layer, 2, 1200).shares
    expected = default_ranker.engine.score_layout(layout)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

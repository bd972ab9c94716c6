"""Property-based tests (hypothesis): arbitrary queries, document lists, lengths and Unicode never crash the
reranker, and its scores keep their invariants. A tiny random Mistral with peaked attention reads prompts
built by the real Mistral v3 tokenizer (mistral-common), with small blocks so truncation paths run often.
"""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockrank_rerank import BlockRank, BlockRankConfig
from blockrank_rerank.layout import build_layout
from blockrank_rerank.tokenize import tokenize_prompt

from conftest import tiny_model

BLOCK = 128
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

lone_surrogate = st.characters(
    min_codepoint=0xD800, max_codepoint=0xDFFF
)  # arrive via JSON escapes or undecodable argv bytes
any_character = st.one_of(st.characters(exclude_categories=()), lone_surrogate)  # every code point, controls included
plain_text = st.text(max_size=60)
hostile_text = st.lists(any_character, max_size=200).map("".join)  # st.text would drop the surrogates
long_text = st.text(st.sampled_from("abc xyz ü 猫 🐱\n\t."), min_size=600, max_size=3000)
fixed_text = st.sampled_from(
    ["", " ", "\n\t ", "Cats purr.", "Stocks fell sharply today.", "ID: 3 | CONTENT: x | END ID: 3", "[", "\u2063"]
)
texts = st.one_of(plain_text, hostile_text, long_text, fixed_text)
documents = st.one_of(texts, st.fixed_dictionaries({"text": texts}, optional={"title": texts, "id": st.integers()}))
queries = st.one_of(plain_text, hostile_text, long_text, fixed_text)


@pytest.fixture(scope="module")
def ranker(mistral_v3_tokenizer):
    model = tiny_model("mistral", peaked=True)
    model.resize_token_embeddings(len(mistral_v3_tokenizer))
    torch.manual_seed(1)
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_()
    return BlockRank(model, mistral_v3_tokenizer, BlockRankConfig(scoring_layer=2, max_block_tokens=BLOCK))


def quietly(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation and query-cut warnings are expected here
        return call(*args, **kwargs)


@SETTINGS
@given(query=queries, docs=st.lists(documents, max_size=8), top_k=st.one_of(st.none(), st.integers(1, 12)))
def test_rerank_never_crashes_and_scores_are_shares(ranker, query, docs, top_k):
    if not query.strip():
        with pytest.raises(ValueError, match="query"):
            quietly(ranker.rerank, query, docs, top_k)
        return
    result = quietly(ranker.rerank, query, docs, top_k)
    assert len(result) == (len(docs) if top_k is None else min(top_k, len(docs)))
    assert [d.rank for d in result] == list(range(1, len(result) + 1))
    assert len({d.index for d in result}) == len(result)
    scores = [d.score for d in result]
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    if docs and top_k is None:
        assert abs(sum(scores) - 1.0) < 1e-5


@SETTINGS
@given(
    query=plain_text.filter(str.strip), docs=st.lists(plain_text, min_size=2, max_size=6), seed=st.integers(0, 2**16)
)
def test_scores_follow_the_blocks_when_they_are_reordered(ranker, query, docs, seed):
    """Permuting the document blocks of the stream (each keeping its tokens, ID included) permutes the scores."""
    prompt = quietly(tokenize_prompt, ranker.engine.tokenizer, query, [d.strip() for d in docs], BLOCK)
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    shuffled = type(prompt)(prompt.prefix, [prompt.documents[k] for k in order], prompt.query_block, prompt.query, ())
    scores = ranker.engine.score_layout(build_layout(prompt, query_position_offset=16384))
    moved = ranker.engine.score_layout(build_layout(shuffled, query_position_offset=16384))
    torch.testing.assert_close(moved, scores[order], atol=1e-6, rtol=0)


@SETTINGS
@given(
    query=plain_text.filter(str.strip),
    distinct=st.lists(texts, min_size=1, max_size=4, unique_by=str.strip),
    picks=st.lists(st.integers(0, 3), min_size=2, max_size=8),
)
def test_duplicates_get_equal_scores(ranker, query, distinct, picks):
    docs = [distinct[p % len(distinct)] for p in picks]
    scores = quietly(ranker.score, query, docs)
    for i, a in enumerate(docs):
        for j, b in enumerate(docs):
            if a.strip() == b.strip():
                assert scores[i] == scores[j]
    assert abs(sum(scores) - 1.0) < 1e-5


@SETTINGS
@given(query=st.one_of(long_text, st.text(st.sampled_from("word "), min_size=400, max_size=2000).filter(str.strip)))
def test_a_long_query_is_cut_but_the_query_block_keeps_its_tail(ranker, query):
    short = tokenize_prompt(ranker.engine.tokenizer, "q", ["doc"], BLOCK).query_block
    with pytest.warns(UserWarning, match="query of"):
        prompt = tokenize_prompt(ranker.engine.tokenizer, query.strip(), ["doc"], BLOCK)
    assert len(prompt.prefix) <= BLOCK and len(prompt.query_block) <= BLOCK
    assert prompt.query_block[-8:] == short[-8:], "the signal tokens at the end of the query block must survive"
    words = lambda text: " ".join(text.split())  # noqa: E731  (decoding may normalise whitespace)
    assert words(query).startswith(words(prompt.query[: max(0, len(prompt.query) - 2)].rstrip("\ufffd")))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=plain_text.filter(str.strip), docs=st.lists(st.one_of(plain_text, long_text), min_size=2, max_size=8))
def test_chunked_scoring_equals_one_shot_on_real_prompts(ranker, query, docs):
    chunked = BlockRank(
        ranker.engine.model, ranker.engine.tokenizer, ranker.config.replace(memory_budget_mb=1e-3)
    )  # one document per chunk
    expected = quietly(ranker.score, query, docs)
    got = quietly(chunked.score, query, docs)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), atol=1e-5, rtol=0)

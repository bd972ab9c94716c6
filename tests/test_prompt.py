"""Prompt segments and tokenisation on the real Mistral v3 tokenizer (mistral-common) and on SmolLM2's."""

from __future__ import annotations

import warnings

import pytest

from blockrank_rerank.prompt import build_segments
from blockrank_rerank.tokenize import tokenize_prompt

DOCS = ["Paris is the capital of France.", "", "Berlin is in Germany."]


def tokens(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(ids)


def test_segments_follow_the_reference_layout(mistral_v3_tokenizer):
    segments = build_segments(mistral_v3_tokenizer, "capital of france", DOCS)
    assert segments.prefix.startswith("<s>[INST] You will be given a query")
    assert segments.prefix.endswith("\nQuery: capital of france\n\nDocuments:")
    assert segments.documents[0] == "\nID: 0 | CONTENT: Paris is the capital of France. | END ID: 0"
    assert segments.documents[1] == "\nID: 1 | CONTENT:  | END ID: 1"
    assert segments.query_block.startswith("\n\n====== Now let's start! ======\n")
    assert segments.query_block.endswith("can help answer the query:[/INST] Final Answer: ")
    assert segments.answer_opening == "["


def test_mistral_v3_blocks_and_signal_tokens(mistral_v3_tokenizer):
    tok = mistral_v3_tokenizer
    prompt = tokenize_prompt(tok, "capital of france", DOCS, max_block_tokens=384)
    assert tokens(tok, prompt.prefix[:2]) == ["<s>", "[INST]"]
    assert "[/INST]" in tokens(tok, prompt.query_block)
    assert tokens(tok, prompt.query_block[-2:]) == ["\u2581", "\u2581["]  # the two signal tokens
    for k, doc in enumerate(prompt.documents):  # each document tokenised on its own, starting with its newline
        assert tokens(tok, doc[:6]) == ["\u2581", "<0x0A>", "ID", ":", "\u2581", str(k)]
        assert doc == tok(f"\nID: {k} | CONTENT: {DOCS[k]} | END ID: {k}", add_special_tokens=False)["input_ids"]


def test_smollm2_signal_tokens(default_ranker):
    tok = default_ranker.engine.tokenizer
    prompt = tokenize_prompt(tok, "capital of france", DOCS, max_block_tokens=384)
    assert tokens(tok, prompt.query_block[-2:]) == ["\u0120", "["]
    assert tokens(tok, prompt.prefix[:1]) == ["<|im_start|>"]


def test_long_documents_are_cut_at_the_block_limit(mistral_v3_tokenizer):
    prompt = tokenize_prompt(mistral_v3_tokenizer, "q", ["word " * 500, "short"], max_block_tokens=128)
    assert len(prompt.documents[0]) == 128 and prompt.truncated_documents == (0,)
    assert len(prompt.documents[1]) < 128


def test_long_query_is_cut_but_the_query_block_tail_is_kept(mistral_v3_tokenizer):
    tok = mistral_v3_tokenizer
    query = " ".join(f"term{i}" for i in range(400))
    with pytest.warns(UserWarning, match="query of"):
        prompt = tokenize_prompt(tok, query, DOCS, max_block_tokens=160)
    assert len(prompt.prefix) <= 160 and len(prompt.query_block) <= 160
    assert tokens(tok, prompt.query_block[-2:]) == ["\u2581", "\u2581["]
    assert query.startswith(prompt.query) and len(prompt.query) < len(query)


def test_block_limit_smaller_than_the_template_is_refused(mistral_v3_tokenizer):
    with pytest.raises(ValueError, match="max_block_tokens"):
        tokenize_prompt(mistral_v3_tokenizer, "q", DOCS, max_block_tokens=20)


def test_short_query_is_not_touched(mistral_v3_tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompt = tokenize_prompt(mistral_v3_tokenizer, "capital of france", DOCS, max_block_tokens=160)
    assert prompt.query == "capital of france"


LONG_QUERIES = ["x" * 2000, "QUJD" * 500, "0123456789" * 60, "0123456789" * 30, "word " * 400]


@pytest.mark.parametrize("query", LONG_QUERIES, ids=["x2000", "base64", "digits600", "digits300", "words"])
def test_long_queries_without_spaces_are_shortened_to_the_longest_fit(mistral_v3_tokenizer, query):
    """The cut is found by bisection on measured block lengths: the longest whole-token prefix that fits, never
    a refusal."""
    from blockrank_rerank.control_tokens import encode_plain
    from blockrank_rerank.tokenize import encode_prompt

    tok, limit = mistral_v3_tokenizer, 160
    with pytest.warns(UserWarning, match="query of"):
        prompt = tokenize_prompt(tok, query, DOCS, max_block_tokens=limit)
    assert len(prompt.prefix) <= limit and len(prompt.query_block) <= limit
    assert query.startswith(prompt.query)
    kept = len(encode_plain(tok, [prompt.query])[0])
    one_more = tok.decode(encode_plain(tok, [query])[0][: kept + 1]).strip()
    prefix, *_, body, opening = encode_prompt(tok, one_more, [])
    assert max(len(prefix), len(body) + len(opening)) > limit  # one more token would not fit
    assert len(prompt.query) >= 50  # not cut to a stub (the probe saw "0123456789" * 30 cut to "0")

"""Tokenised blocks: each segment tokenised on its own, documents truncated, the query cut to fit.

The query block is never truncated at its tail, where the signal tokens live: when the query is too long
for `max_block_tokens`, the query text itself is shortened (in both the prefix and the query block).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

from .inputs import clean_text
from .prompt import build_segments

logger = logging.getLogger(__name__)
MAX_CHARS_PER_TOKEN = 64  # texts longer than max_block_tokens * this are cut before tokenising: the kept tokens never reach the cut


@dataclass(frozen=True)
class TokenizedPrompt:
    """Token ids of every block of one prompt."""

    prefix: list[int]  # block 0
    documents: list[list[int]]  # blocks 1..N, each at most max_block_tokens long
    query_block: list[int]  # block N+1, ending with the signal tokens
    query: str  # the query text actually used (shortened when it did not fit)
    truncated_documents: tuple[int, ...]  # indices of documents cut to max_block_tokens

    @property
    def num_documents(self) -> int:
        return len(self.documents)


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _frame_lengths(tokenizer: Any, query: str) -> tuple[int, int]:
    """Token lengths of the prefix and of the query block for `query`, with no documents."""
    segments = build_segments(tokenizer, query, [])
    prefix, body, opening = _encode(tokenizer, [segments.prefix, segments.query_block, segments.answer_opening])
    return len(prefix), len(body) + len(opening)


def fit_query(tokenizer: Any, query: str, max_block_tokens: int) -> str:
    """`query`, shortened by whole tokens until the prefix and the query block each fit `max_block_tokens`."""
    precut = len(query) > max_block_tokens * MAX_CHARS_PER_TOKEN
    query = query[: max_block_tokens * MAX_CHARS_PER_TOKEN]
    longest = max(_frame_lengths(tokenizer, query))
    if longest <= max_block_tokens:
        return query
    overhead = max(_frame_lengths(tokenizer, ""))
    if overhead >= max_block_tokens:
        raise ValueError(
            f"max_block_tokens={max_block_tokens} leaves no room for the query: the prompt template alone "
            f"takes {overhead} tokens in one block"
        )
    query_ids = _encode(tokenizer, [query])[0]
    keep = min(len(query_ids), max_block_tokens - overhead)
    while keep > 0:
        shortened = tokenizer.decode(query_ids[:keep], skip_special_tokens=True).strip()
        if max(_frame_lengths(tokenizer, shortened)) <= max_block_tokens:
            warnings.warn(
                f"query of {len(query_ids)}{'+' if precut else ''} tokens cut to {keep} tokens to fit max_block_tokens={max_block_tokens}",
                stacklevel=3,
            )
            return shortened
        keep -= max(1, (longest - max_block_tokens) // 4)
    raise ValueError(f"could not fit the query into max_block_tokens={max_block_tokens}")


def tokenize_prompt(tokenizer: Any, query: str, contents: list[str], max_block_tokens: int) -> TokenizedPrompt:
    """Render and tokenise the prompt of `query` over document `contents` block by block (text cleaned as in `inputs`)."""
    query = fit_query(tokenizer, clean_text(query, "the query"), max_block_tokens)
    contents = [clean_text(c, f"document {k}")[: max_block_tokens * MAX_CHARS_PER_TOKEN] for k, c in enumerate(contents)]
    segments = build_segments(tokenizer, query, contents)
    encoded = _encode(tokenizer, [segments.prefix, *segments.documents, segments.query_block, segments.answer_opening])
    prefix, documents, body, opening = encoded[0], encoded[1:-2], encoded[-2], encoded[-1]
    truncated = tuple(k for k, ids in enumerate(documents) if len(ids) > max_block_tokens)
    if truncated:
        logger.info("%d of %d documents truncated to %d tokens", len(truncated), len(documents), max_block_tokens)
    return TokenizedPrompt(
        prefix=prefix,
        documents=[ids[:max_block_tokens] for ids in documents],
        query_block=body + opening,
        query=query,
        truncated_documents=truncated,
    )

"""Tokenised blocks: each segment tokenised on its own, documents truncated, the query cut to fit.

The query block is never truncated at its tail, where the signal tokens live: when the query is too long
for `max_block_tokens`, the query text itself is shortened (in both the prefix and the query block).
"""

from __future__ import annotations

import logging

from dataclasses import dataclass
from typing import Any

from .caller_warnings import warn_at_caller
from .control_tokens import ControlTokenGuard, encode_plain
from .inputs import clean_text
from .prompt import build_segments

logger = logging.getLogger(__name__)
MAX_CHARS_PER_TOKEN = (
    64  # texts longer than max_block_tokens * this are cut before tokenising: the kept tokens never reach the cut
)


@dataclass(frozen=True)
class TokenizedPrompt:
    """Token ids of every block of one prompt."""

    prefix: list[int]  # block 0
    documents: list[list[int]]  # blocks 1..N, each at most max_block_tokens long
    query_block: list[int]  # block N+1, ending with the signal tokens
    query: str  # the query text actually used (shortened when it did not fit)
    truncated_documents: tuple[int, ...]  # indices of documents cut to max_block_tokens (or to their block cap)
    # input document of each block when long documents are split into several blocks; () when one block each
    document_of_block: tuple[int, ...] = ()

    @property
    def num_documents(self) -> int:
        return len(self.documents)


def encode_prompt(tokenizer: Any, query: str, contents: list[str]) -> list[list[int]]:
    """Ids of every segment (prefix, documents, query block, answer opening); control strings in user text stay
    plain."""
    guard = ControlTokenGuard(tokenizer, [query, *contents])
    segments = build_segments(tokenizer, guard.escape(query), [guard.escape(c) for c in contents])
    return guard.encode([segments.prefix, *segments.documents, segments.query_block, segments.answer_opening])


def _frame_lengths(tokenizer: Any, query: str) -> tuple[int, int]:
    """Token lengths of the prefix and of the query block for `query`, with no documents."""
    prefix, body, opening = encode_prompt(tokenizer, query, [])
    return len(prefix), len(body) + len(opening)


def fit_query(tokenizer: Any, query: str, max_block_tokens: int) -> str:
    """`query`, shortened to its longest whole-token prefix with which the prefix and the query block fit
    `max_block_tokens`.

    The length is found by bisection on the number of kept tokens, each candidate measured in its blocks
    (a cut can merge or split tokens at the boundary, so counts are measured, never extrapolated).
    """
    precut = len(query) > max_block_tokens * MAX_CHARS_PER_TOKEN
    query = query[: max_block_tokens * MAX_CHARS_PER_TOKEN]
    if max(_frame_lengths(tokenizer, query)) <= max_block_tokens:
        return query
    overhead = max(_frame_lengths(tokenizer, ""))
    if overhead >= max_block_tokens:
        raise ValueError(
            f"max_block_tokens={max_block_tokens} leaves no room for the query: the prompt template alone "
            f"takes {overhead} tokens in one block"
        )
    query_ids = encode_plain(tokenizer, [query])[0]

    def shortened(keep: int) -> str:
        return tokenizer.decode(query_ids[:keep], skip_special_tokens=True).strip()

    low, high = 0, len(query_ids) - 1  # the longest fitting keep lies in [low, high]; keep=0 always fits
    while low < high:
        middle = (low + high + 1) // 2
        if max(_frame_lengths(tokenizer, shortened(middle))) <= max_block_tokens:
            low = middle
        else:
            high = middle - 1
    result = shortened(low)
    if not result:
        raise ValueError(f"could not fit any of the query into max_block_tokens={max_block_tokens}")
    warn_at_caller(
        f"query of {len(query_ids)}{'+' if precut else ''} tokens cut to {low} tokens "
        f"to fit max_block_tokens={max_block_tokens}"
    )
    return result


def tokenize_prompt(
    tokenizer: Any, query: str, contents: list[str], max_block_tokens: int, max_blocks_per_document: int = 1
) -> TokenizedPrompt:
    """Render and tokenise the prompt of `query` over document `contents` block by block (text cleaned as in
    `inputs`).

    A document longer than `max_block_tokens` is cut there, or, with `max_blocks_per_document` > 1, continues in
    up to that many consecutive blocks of the same prompt (each sees the prefix and itself; `document_of_block`
    maps blocks back to documents) and is cut only after the last.
    """
    query = fit_query(tokenizer, clean_text(query, "the query"), max_block_tokens)
    limit = max_block_tokens * max_blocks_per_document
    contents = [clean_text(c, f"document {k}")[: limit * MAX_CHARS_PER_TOKEN] for k, c in enumerate(contents)]
    encoded = encode_prompt(tokenizer, query, contents)
    prefix, documents, body, opening = encoded[0], encoded[1:-2], encoded[-2], encoded[-1]
    truncated = tuple(k for k, ids in enumerate(documents) if len(ids) > limit)
    if truncated:
        logger.info("%d of %d documents truncated to %d tokens", len(truncated), len(documents), limit)
    if max_blocks_per_document == 1:
        blocks, owners = [ids[:max_block_tokens] for ids in documents], ()
    else:
        blocks, owner_list = [], []
        for k, ids in enumerate(documents):
            kept = ids[:limit]
            for start in range(0, len(kept), max_block_tokens):
                blocks.append(kept[start : start + max_block_tokens])
                owner_list.append(k)
        owners = tuple(owner_list)
    return TokenizedPrompt(
        prefix=prefix,
        documents=blocks,
        query_block=body + opening,
        query=query,
        truncated_documents=truncated,
        document_of_block=owners,
    )

"""Prompt segments: the instruction with the query, one segment per document, and the final query block.

The segments are rendered through the tokenizer's chat template once (one user message plus a continued
assistant message), joined by a sentinel and split on it again, so that chat-template tokens fall in the
prefix and the query block and each segment can be tokenised on its own (docs/design.md §1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

INSTRUCTION = (
    "You will be given a query and a list of documents. Each document will be formatted as "
    "ID: <id> | CONTENT: <content> | END ID: <id>. You need to read carefully and understand all of them "
    "and your goal is to find all document(s) from the list that can help answer the query."
)
ANSWER_PREFIX = "Final Answer: "
ANSWER_OPENING = "["
SENTINEL = "\u2063<BLOCKRANK_SPLIT>\u2063"


@dataclass(frozen=True)
class PromptSegments:
    """The text of every block, in order, ready to be tokenised separately."""

    prefix: str  # block 0: chat-template opening + instruction + query + "Documents:"
    documents: tuple[str, ...]  # blocks 1..N: "\nID: k | CONTENT: ... | END ID: k"
    query_block: str  # block N+1 up to and including "Final Answer: "
    answer_opening: str  # "[", tokenised on its own and appended to the query block


def prefix_text(query: str) -> str:
    return f"{INSTRUCTION}\nQuery: {query}\n\nDocuments:"


def document_text(index: int, content: str) -> str:
    """The body of document block `index` (without its leading newline)."""
    return f"ID: {index} | CONTENT: {content} | END ID: {index}"


def query_block_text(query: str) -> str:
    """The body of the final query block (the leading newline is added when splitting)."""
    return (
        "\n====== Now let's start! ======\nWhich document is most relevant to answer the query? "
        f"Print out the ID of the document.\nQuery: {query}\nThe following document(s) can help answer the query:"
    )


def _render(tokenizer: Any, user: str, assistant: str) -> str:
    """One user message and a continued assistant message, through the chat template when there is one."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    logger.info("tokenizer has no chat template; using a plain 'user\\n\\nassistant' layout")
    bos = tokenizer.bos_token or ""
    return f"{bos}{user}\n\n{assistant}"


def build_segments(tokenizer: Any, query: str, contents: list[str]) -> PromptSegments:
    """Render the prompt for `query` and the document `contents` (already cleaned strings)."""
    pieces = [prefix_text(query)] + [document_text(k, c) for k, c in enumerate(contents)] + [query_block_text(query)]
    assistant = ANSWER_PREFIX + SENTINEL + ANSWER_OPENING
    rendered = _render(tokenizer, SENTINEL.join(pieces), assistant)
    parts = rendered.split(SENTINEL)
    if len(parts) != len(pieces) + 1:
        raise ValueError(
            "a document or the query contains the internal segment sentinel, or the chat template rewrote "
            f"the message: expected {len(pieces) + 1} parts, got {len(parts)}"
        )
    if parts[-1] != ANSWER_OPENING:
        raise ValueError(f"the chat template appended text after the assistant message: {parts[-1]!r}")
    documents = tuple("\n" + p for p in parts[1:-2])
    return PromptSegments(
        prefix=parts[0],
        documents=documents,
        query_block="\n" + parts[-2],
        answer_opening=parts[-1],
    )

"""Validation and normalisation of what callers pass in: queries, documents and `top_k`.

Text is cleaned, never rejected, for what a tokenizer cannot take: lone surrogates (invalid Unicode that
arrives through JSON escapes or undecodable command-line bytes) become U+FFFD, and the prompt's internal
segment sentinel is removed; both are logged.
"""

from __future__ import annotations

import logging
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from .prompt import SENTINEL

logger = logging.getLogger(__name__)

DocumentInput = Union[str, Mapping[str, Any]]
TEXT_KEYS = ("text", "content")
SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Candidates:
    """Documents reduced to what the ranker reads (content) and what it hands back (id, metadata)."""

    contents: list[str]
    ids: list[Any]
    metadata: list[Mapping[str, Any]]


def clean_text(text: str, what: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD and the segment sentinel removed (each logged)."""
    if SURROGATES.search(text):
        logger.warning("%s holds invalid Unicode (lone surrogates); replaced with U+FFFD", what)
        text = SURROGATES.sub("\ufffd", text)
    if SENTINEL in text:
        logger.warning("%s contains the prompt's internal segment sentinel; removed", what)
        text = text.replace(SENTINEL, "")
    return text


def check_query(query: Any) -> str:
    """The query, cleaned and stripped; TypeError for a non-string, ValueError for an empty one."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    query = clean_text(query, "the query").strip()
    if not query:
        raise ValueError("query must contain non-whitespace text, got an empty query")
    return query


def check_top_k(top_k: Any, name: str = "top_k") -> Optional[int]:
    """`top_k` as an int (any integral number, e.g. numpy's, is accepted), or None; ValueError otherwise."""
    if top_k is None:
        return None
    if not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"{name} must be None or an int >= 1, got {top_k!r}")
    return int(top_k)


def _content(document: DocumentInput, position: int) -> tuple[str, Any, Mapping[str, Any]]:
    if isinstance(document, str):
        return clean_text(document, f"document {position}").strip(), None, {}
    if isinstance(document, Mapping):
        key = next((k for k in TEXT_KEYS if k in document), None)
        if key is None:
            raise ValueError(f"document {position} is a mapping without a 'text' or 'content' key")
        text, title = document[key], document.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            bad = text if not isinstance(text, str) else title
            raise TypeError(f"document {position}: '{key}' and 'title' must be str, got {type(bad).__name__}")
        extra = {k: v for k, v in document.items() if k not in (key, "title", "id")}
        return clean_text(f"{title} {text}", f"document {position}").strip(), document.get("id"), extra
    raise TypeError(f"document {position} must be a str or a mapping with 'text', got {type(document).__name__}")


def check_documents(documents: Any) -> Candidates:
    """`documents` as a list of contents, ids and metadata; the caller's objects are never modified."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of str or mappings, got {type(documents).__name__}")
    parsed = [_content(d, i) for i, d in enumerate(documents)]
    return Candidates([p[0] for p in parsed], [p[1] for p in parsed], [p[2] for p in parsed])


def unique_contents(contents: list[str]) -> tuple[list[str], list[int]]:
    """Distinct contents in first-seen order, and for each input the index of its distinct content."""
    first: dict[str, int] = {}
    inverse = [first.setdefault(c, len(first)) for c in contents]
    return list(first), inverse

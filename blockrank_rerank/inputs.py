"""Validation and normalisation of what callers pass in: queries, documents and `top_k`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

DocumentInput = Union[str, Mapping[str, Any]]
TEXT_KEYS = ("text", "content")


@dataclass(frozen=True)
class Candidates:
    """Documents reduced to what the ranker reads (content) and what it hands back (id, metadata)."""

    contents: list[str]
    ids: list[Any]
    metadata: list[Mapping[str, Any]]


def check_query(query: Any) -> str:
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query must contain non-whitespace text, got an empty query")
    return query.strip()


def check_top_k(top_k: Any, name: str = "top_k") -> Optional[int]:
    if top_k is None:
        return None
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"{name} must be None or an int >= 1, got {top_k!r}")
    return top_k


def _content(document: DocumentInput, position: int) -> tuple[str, Any, Mapping[str, Any]]:
    if isinstance(document, str):
        return document.strip(), None, {}
    if isinstance(document, Mapping):
        key = next((k for k in TEXT_KEYS if k in document), None)
        if key is None:
            raise ValueError(f"document {position} is a mapping without a 'text' or 'content' key")
        text, title = document[key], document.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise TypeError(f"document {position}: 'text'/'content' and 'title' must be str, got {type(text).__name__}")
        extra = {k: v for k, v in document.items() if k not in (key, "title", "id")}
        return f"{title} {text}".strip(), document.get("id"), extra
    raise TypeError(f"document {position} must be a str or a mapping with 'text', got {type(document).__name__}")


def check_documents(documents: Any) -> Candidates:
    """`documents` as a list of contents, ids and metadata; the caller's objects are never modified."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of str or mappings, got {type(documents).__name__}")
    parsed = [_content(d, i) for i, d in enumerate(documents)]
    return Candidates([p[0] for p in parsed], [p[1] for p in parsed], [p[2] for p in parsed])

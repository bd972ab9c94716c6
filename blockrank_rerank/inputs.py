"""Validation and normalisation of what callers pass in: queries, documents and `top_k`.

Text is cleaned, never rejected, for what a tokenizer cannot take: lone surrogates (invalid Unicode that
arrives through JSON escapes or undecodable command-line bytes) become U+FFFD, and the prompt's internal
segment sentinel is removed; both are logged. Ids and metadata get the same surrogate cleaning (strings
at any depth, keys included), so results can always be encoded as UTF-8 (JSON output, logs).
"""

from __future__ import annotations

import logging
import math
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


def clean_value(value: Any) -> Any:
    """`value` with lone surrogates in every string (dict keys included, at any depth) replaced by U+FFFD.

    Only dicts, lists and tuples are walked (what JSON holds); other objects and cycles are returned as they
    are. Unchanged parts are returned as the same objects. RecursionError when nested deeper than Python's stack.
    """
    return _clean_value(value, set())


def _clean_value(value: Any, path: set[int]) -> Any:
    if isinstance(value, str):
        return SURROGATES.sub("\ufffd", value) if SURROGATES.search(value) else value
    if type(value) not in (dict, list, tuple) or id(value) in path:
        return value
    path.add(id(value))
    pairs = list(value.items()) if type(value) is dict else [(None, item) for item in value]
    cleaned = [(_clean_value(key, path), _clean_value(item, path)) for key, item in pairs]
    path.discard(id(value))
    if all(new_key is key and new is item for (new_key, new), (key, item) in zip(cleaned, pairs)):
        return value
    return dict(cleaned) if type(value) is dict else type(value)(item for _, item in cleaned)


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


def check_score_threshold(threshold: Any, name: str = "score_threshold") -> Optional[float]:
    """`threshold` as a finite float (any real number, e.g. numpy's), or None; ValueError otherwise."""
    if threshold is None:
        return None
    if not isinstance(threshold, numbers.Real) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise ValueError(f"{name} must be None or a finite number, got {threshold!r}")
    return float(threshold)


def _content(document: DocumentInput, position: int) -> tuple[str, Any, Mapping[str, Any]]:
    if isinstance(document, str):
        return clean_text(document, f"document {position}").strip(), None, {}
    if isinstance(document, Mapping):
        key = next((k for k in TEXT_KEYS if k in document), None)
        if key is None:
            raise ValueError(f"document {position} is a mapping without a 'text' or 'content' key")
        text, title = document[key], document.get("title")
        if not isinstance(text, str):
            raise TypeError(f"document {position}: '{key}' must be a str, got {type(text).__name__}")
        if title is not None and not isinstance(title, str):
            raise TypeError(f"document {position}: 'title' must be a str or None, got {type(title).__name__}")
        extra = {k: v for k, v in document.items() if k not in (key, "title", "id")}
        docid, extra = _clean_id_and_metadata(document.get("id"), extra, position)
        return clean_text(f"{title or ''} {text}", f"document {position}").strip(), docid, extra
    raise TypeError(f"document {position} must be a str or a mapping with 'text', got {type(document).__name__}")


def _clean_id_and_metadata(docid: Any, extra: dict[str, Any], position: int) -> tuple[Any, dict[str, Any]]:
    """The id and metadata of document `position` with lone surrogates replaced (logged); ValueError when too
    deep to walk."""
    try:
        cleaned_id, cleaned_extra = clean_value(docid), clean_value(extra)
    except RecursionError:
        raise ValueError(f"document {position}: 'id' or metadata is nested too deeply") from None
    if cleaned_id is not docid or cleaned_extra is not extra:
        logger.warning(
            "document %d: 'id' or metadata holds invalid Unicode (lone surrogates); replaced with U+FFFD", position
        )
    return cleaned_id, cleaned_extra


def check_max_documents(count: int, max_documents: Optional[int]) -> None:
    """ValueError when `count` documents exceed the configured `max_documents` (None: no limit)."""
    if max_documents is not None and count > max_documents:
        raise ValueError(
            f"{count} documents exceed max_documents={max_documents}; raise the limit with "
            f"BlockRankConfig(max_documents=...) (None: no limit), or --max-documents on the command line"
        )


def check_documents(documents: Any, max_documents: Optional[int] = None) -> Candidates:
    """`documents` as a list of contents, ids and metadata; the caller's objects are never modified.

    The count is checked against `max_documents` before any document is looked at, so an oversized call
    fails at once instead of after building per-document objects.
    """
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of str or mappings, got {type(documents).__name__}")
    check_max_documents(len(documents), max_documents)
    parsed = [_content(d, i) for i, d in enumerate(documents)]
    return Candidates([p[0] for p in parsed], [p[1] for p in parsed], [p[2] for p in parsed])


def check_queries(queries: Any) -> list[str]:
    """Each query of a batch checked and cleaned; TypeError for a str or bytes (it would iterate per character)
    or a non-sequence."""
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Sequence):
        raise TypeError(f"queries must be a list of str, got {type(queries).__name__}")
    checked = []
    for number, query in enumerate(queries):
        try:
            checked.append(check_query(query))
        except (TypeError, ValueError) as error:
            raise type(error)(f"queries[{number}]: {error}") from None
    return checked


def unique_contents(contents: list[str]) -> tuple[list[str], list[int]]:
    """Distinct contents in first-seen order, and for each input the index of its distinct content."""
    first: dict[str, int] = {}
    inverse = [first.setdefault(c, len(first)) for c in contents]
    return list(first), inverse

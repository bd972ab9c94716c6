"""Token limits of a request: count query and document tokens, cut over-long texts (or refuse them), per field.

The defaults are what the model's blocks hold: a document's tokens beside its block wrapper (`ID: k | CONTENT:
... | END ID: k`), a query's beside the instruction and the query-block template. Texts within them reach the
engine unchanged, so it never truncates behind the client's back. Cuts fall on token boundaries (the fast
tokenizer's offsets), keeping the head ("Right": the tail is removed) or the tail ("Left").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..control_tokens import encode_plain
from ..prompt import document_text
from ..tokenize import encode_prompt


class InputError(Exception):
    """A request the server refuses: HTTP status, message and the field at fault."""

    def __init__(self, status: int, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class TokenLimits:
    """Most tokens one document and one query may have."""

    per_document: int
    per_query: int


def model_limits(ranker: Any, max_documents: int) -> TokenLimits:
    """What the ranker's blocks hold for a document (wrapper with the widest index excluded) and for a query."""
    config, tokenizer = ranker.config, ranker.engine.tokenizer
    widest = max(max_documents - 1, 0)
    wrapper = len(encode_plain(tokenizer, ["\n" + document_text(widest, "")])[0])
    per_document = config.max_block_tokens * config.blocks_per_document - wrapper
    prefix, documents, body, opening = encode_prompt(tokenizer, "", [""])
    per_query = config.max_block_tokens - max(len(prefix), len(body) + len(opening))
    return TokenLimits(per_document=max(per_document, 1), per_query=max(per_query, 1))


class Truncator:
    """Counts tokens of texts and cuts them on token boundaries, with the ranker's tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer's Rust object: offsets

    def fit(self, texts: list[str], limit: int, cut: bool, keep: str, field: str) -> tuple[list[str], list[int]]:
        """`texts` at most `limit` tokens each and their token counts; over-long ones are cut when `cut` (keeping
        the head for keep="Right", the tail for "Left"), else InputError(422) naming `field[i]`."""
        fitted, counts = list(texts), []
        for position, (text, ids, offsets) in enumerate(self._encode(texts)):
            if len(ids) > limit:
                if not cut:
                    name = f"{field}[{position}]" if field in ("documents", "texts") else field
                    raise InputError(
                        422,
                        f"{name} has {len(ids)} tokens, more than the {limit} allowed; ask for truncation "
                        "(Cohere: max_tokens_per_doc; TEI: truncate=true) or shorten it",
                        name,
                    )
                fitted[position] = self._cut(text, ids, offsets, limit, keep)
                counts.append(limit)
            else:
                counts.append(len(ids))
        return fitted, counts

    def _encode(self, texts: list[str]) -> list[tuple[str, list[int], Optional[list[tuple[int, int]]]]]:
        if self.backend is not None:
            encodings = self.backend.encode_batch(texts, add_special_tokens=False)
            return [(text, enc.ids, enc.offsets) for text, enc in zip(texts, encodings)]
        return [(text, ids, None) for text, ids in zip(texts, encode_plain(self.tokenizer, texts))]

    def _cut(self, text: str, ids: list[int], offsets: Optional[list[tuple[int, int]]], limit: int, keep: str) -> str:
        if offsets is not None:
            return text[: offsets[limit - 1][1]] if keep == "Right" else text[offsets[len(ids) - limit][0] :]
        kept = ids[:limit] if keep == "Right" else ids[len(ids) - limit :]
        return self.tokenizer.decode(kept, skip_special_tokens=True)

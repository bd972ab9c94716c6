"""Pointwise relevance from the same causal LM: log P("Yes") - log P("No") after a per-document question."""

from __future__ import annotations

from typing import Any

import torch

from . import BaselineReranker, encode_chat, truncate_text

QUESTION = "Query: {query}\nDocument: {document}\nIs the document relevant to the query? Answer Yes or No."


class PointwiseRelevance(BaselineReranker):
    """One forward per document (batched), reading the next-token logits of "Yes" and "No"."""

    name = "pointwise"

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16, max_document_tokens: int = 384) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_document_tokens = batch_size, max_document_tokens
        self.yes_id, self.no_id = (self._single_token(word) for word in ("Yes", "No"))

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{word!r} is {len(ids)} tokens for this tokenizer; the pointwise baseline needs one")
        return ids[0]

    def score_contents(self, query: str, contents: list[str]) -> list[float]:
        encoded = [
            encode_chat(
                self.tokenizer,
                QUESTION,
                {"query": query, "document": truncate_text(self.tokenizer, c, self.max_document_tokens)},
            )
            for c in contents
        ]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # batch similar lengths together
        scores = [0.0] * len(encoded)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                width = max(len(encoded[i]) for i in batch)
                ids = torch.zeros(len(batch), width, dtype=torch.long)  # (B, T), right-padded
                mask = torch.zeros(len(batch), width, dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, : len(encoded[i])] = 1
                hidden = self.model.model(
                    input_ids=ids.to(device), attention_mask=mask.to(device)
                ).last_hidden_state  # (B, T, C)
                last = hidden[torch.arange(len(batch)), mask.sum(dim=1).to(device) - 1]  # (B, C)
                logits = self.model.lm_head(last).float()  # (B, V)
                pair = logits[:, [self.yes_id, self.no_id]].log_softmax(dim=-1)  # (B, 2)
                for row, i in enumerate(batch):
                    scores[i] = float(pair[row, 0])
        return scores

"""Scores from the signal tokens' attention at layer L*: softmax over all document tokens, summed per document."""

from __future__ import annotations

import torch


def signal_attention(signal_queries: torch.Tensor, document_keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of each signal token, per head, over all document tokens, in fp32.

    Shapes: signal_queries (H, S, D), document_keys (Hkv, Dtok, D) -> (H, S, Dtok), rows summing to 1.
    """
    groups = signal_queries.shape[0] // document_keys.shape[0]
    keys = document_keys.float().repeat_interleave(groups, dim=0)  # (Hkv, Dtok, D) -> (H, Dtok, D)
    logits = (signal_queries.float() @ keys.transpose(1, 2)) * scale  # (H, S, Dtok)
    return logits.softmax(dim=-1)


def document_scores(token_attention: torch.Tensor, document_index: torch.Tensor, num_documents: int) -> torch.Tensor:
    """Mean over heads and signal tokens, summed per document. Shapes: (H, S, Dtok), (Dtok,) -> (N,), sums to 1."""
    per_token = token_attention.mean(dim=(0, 1))  # (Dtok,)
    scores = torch.zeros(num_documents, dtype=per_token.dtype, device=per_token.device)
    return scores.index_add(0, document_index.to(per_token.device), per_token)

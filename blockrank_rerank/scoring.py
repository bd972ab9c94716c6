"""The readout (docs/design.md §4): the signal tokens' attention at layer L* over all document tokens, as document scores.

For each head and signal token, a softmax over every document token of every document (fp32); the mean over
heads and signal tokens, summed per document, is the score: N shares that sum to 1. `read_scores` is the one
entry point (torch, or the fused Triton kernel that never forms the probabilities); `document_log_mass`
gives the same quantity per document as log-sum-exps, which the chunked path merges across chunks.
"""

from __future__ import annotations

import torch


def signal_attention(signal_queries: torch.Tensor, document_keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of each signal token, per head, over all document tokens, in fp32.

    Shapes: signal_queries (H, S, D), document_keys (Hkv, Dtok, D) -> (H, S, Dtok), rows summing to 1.
    """
    logits = signal_logits(signal_queries, document_keys, scale)  # (H, S, Dtok)
    return logits.softmax(dim=-1)


def signal_logits(signal_queries: torch.Tensor, document_keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled fp32 logits of the signal queries against document keys (GQA keys shared by their query heads).

    Shapes: (H, S, D), (Hkv, Dtok, D) -> (H, S, Dtok).
    """
    groups = signal_queries.shape[0] // document_keys.shape[0]
    keys = document_keys.float().repeat_interleave(groups, dim=0)  # (Hkv, Dtok, D) -> (H, Dtok, D)
    return (signal_queries.float() @ keys.transpose(1, 2)) * scale  # (H, S, Dtok)


def document_scores(token_attention: torch.Tensor, document_index: torch.Tensor, num_documents: int) -> torch.Tensor:
    """Mean over heads and signal tokens, summed per document. Shapes: (H, S, Dtok), (Dtok,) -> (N,), sums to 1."""
    per_token = token_attention.mean(dim=(0, 1))  # (Dtok,)
    scores = torch.zeros(num_documents, dtype=per_token.dtype, device=per_token.device)
    return scores.index_add(0, document_index.to(per_token.device), per_token)


def read_scores(
    signal_queries: torch.Tensor, document_keys: torch.Tensor, document_index: torch.Tensor, num_documents: int, scale: float,
    *, fused: bool = False,
) -> torch.Tensor:
    """Document scores (N,) in fp32, summing to 1, from layer L*'s signal queries (H, S, D) and document keys (Hkv, Dtok, D).

    `fused` runs the Triton readout (CUDA, no autograd), which never forms the (H, S, Dtok) probabilities.
    """
    if fused:
        from .kernels.score_readout import fused_document_scores

        owner = document_index.to(document_keys.device)
        return fused_document_scores(signal_queries, document_keys, owner, num_documents, scale)
    return document_scores(signal_attention(signal_queries, document_keys, scale), document_index, num_documents)


def document_log_mass(
    signal_queries: torch.Tensor, document_keys: torch.Tensor, document_index: torch.Tensor, num_documents: int, scale: float
) -> torch.Tensor:
    """Per head, signal token and document: the log-sum-exp of its tokens' logits. Shapes: -> (H, S, N).

    Shares follow as exp(lse_doc - logsumexp over all documents), averaged over heads and signal tokens
    (`shares_from_log_mass`); the chunked path computes this per chunk and concatenates.
    """
    logits = signal_logits(signal_queries, document_keys, scale)  # (H, S, Dtok)
    heads, count, _ = logits.shape
    owner = document_index.to(logits.device)
    peak = torch.full((heads, count, num_documents), float("-inf"), device=logits.device)
    peak = peak.scatter_reduce(2, owner.expand(heads, count, -1), logits, "amax")  # (H, S, N), order-free
    total = torch.zeros(heads, count, num_documents, device=logits.device).index_add(2, owner, (logits - peak[:, :, owner]).exp())
    return peak + total.log()


def shares_from_log_mass(document_lse: torch.Tensor) -> torch.Tensor:
    """Document shares (N,) summing to 1 from per-document log-sum-exps (H, S, N)."""
    return (document_lse - document_lse.logsumexp(dim=-1, keepdim=True)).exp().mean(dim=(0, 1))

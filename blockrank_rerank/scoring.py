"""The readout (docs/design.md §4): the signal tokens' attention at layer L* over all document tokens, as scores.

For each head and signal token, a softmax over every document token of every document (fp32); the mean over
heads and signal tokens, summed per document, is the score: N shares that sum to 1. A head selection
(`BlockRankConfig.head_weights`) replaces the mean over heads by weights, possibly over several layers.
`read_scores` is the one entry point (torch, or the fused Triton kernel that never forms the probabilities);
`document_log_mass` gives the same quantity per document as log-sum-exps, which the chunked path merges, and
with `prefix_log_mass` the list-independent `relevance_logits` (docs/design.md §4, "Relevance").
"""

from __future__ import annotations

from typing import Optional

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
    with torch.autocast(signal_queries.device.type, enabled=False):  # fp32 under a mixed-precision forward too
        return (signal_queries.float() @ keys.transpose(1, 2)) * scale  # (H, S, Dtok)


def document_scores(
    token_attention: torch.Tensor,
    document_index: torch.Tensor,
    num_documents: int,
    head_weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Heads (their mean, or weighted by `head_weights` (H,)) and signal tokens averaged, summed per document.

    Shapes: (H, S, Dtok), (Dtok,) -> (N,); sums to 1 with the mean, to sum(head_weights) with weights.
    """
    if head_weights is None:
        per_token = token_attention.mean(dim=(0, 1))  # (Dtok,)
    else:
        per_head = token_attention.mean(dim=1)  # (H, S, Dtok) -> (H, Dtok)
        per_token = (per_head * head_weights.to(per_head)[:, None]).sum(dim=0)  # (Dtok,)
    scores = torch.zeros(num_documents, dtype=per_token.dtype, device=per_token.device)
    return scores.index_add(0, document_index.to(per_token.device), per_token)


def head_document_shares(
    token_attention: torch.Tensor, document_index: torch.Tensor, num_documents: int
) -> torch.Tensor:
    """Each head's document shares, its signal tokens averaged: what head selection compares.

    Shapes: (H, S, Dtok), (Dtok,) -> (H, N), each row summing to 1.
    """
    per_head = token_attention.mean(dim=1)  # (H, S, Dtok) -> (H, Dtok)
    shares = torch.zeros(per_head.shape[0], num_documents, dtype=per_head.dtype, device=per_head.device)
    return shares.index_add(1, document_index.to(per_head.device), per_head)


def read_scores(
    signal_queries: torch.Tensor,
    document_keys: torch.Tensor,
    document_index: torch.Tensor,
    num_documents: int,
    scale: float,
    *,
    head_weights: Optional[torch.Tensor] = None,
    fused: bool = False,
) -> torch.Tensor:
    """Document scores (N,) in fp32 from one layer's signal queries (H, S, D) and document keys (Hkv, Dtok, D).

    Every head counts the same unless `head_weights` (H,) weighs them (head selection, docs/design.md §4); the
    scores sum to 1, or to sum(head_weights). `fused` runs the Triton readout (CUDA, no autograd, equal head
    weights only), which never forms the (H, S, Dtok) probabilities.
    """
    if fused and head_weights is None:
        from .kernels.score_readout import fused_document_scores

        owner = document_index.to(document_keys.device)
        return fused_document_scores(signal_queries, document_keys, owner, num_documents, scale)
    attention = signal_attention(signal_queries, document_keys, scale)  # (H, S, Dtok)
    return document_scores(attention, document_index, num_documents, head_weights)


def document_log_mass(
    signal_queries: torch.Tensor,
    document_keys: torch.Tensor,
    document_index: torch.Tensor,
    num_documents: int,
    scale: float,
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
    total = torch.zeros(heads, count, num_documents, device=logits.device).index_add(
        2, owner, (logits - peak[:, :, owner]).exp()
    )
    return peak + total.log()


def prefix_log_mass(signal_queries: torch.Tensor, prefix_keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Per head and signal token, the log-sum-exp of the logits over the prefix's keys (the instruction every block
    sees): the content-free reference block that relevance is measured against. Shapes: (H, S, D), (Hkv, P, D) ->
    (H, S)."""
    return signal_logits(signal_queries, prefix_keys, scale).logsumexp(dim=-1)


def relevance_logits(
    document_lse: torch.Tensor, prefix_lse: torch.Tensor, head_weights: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Per document, mean over signal tokens and heads (or weighted by `head_weights`) of its log-mass relative
    to the prefix's, log(mass_doc / mass_prefix): unlike a share it has no term for the other documents, so it
    barely moves with the list. Shapes: (H, S, N), (H, S) -> (N,)."""
    ratio = (document_lse - prefix_lse[..., None]).mean(dim=1)  # (H, S, N) -> (H, N)
    if head_weights is None:
        return ratio.mean(dim=0)
    return (ratio * head_weights.to(ratio)[:, None]).sum(dim=0)  # (H, N) -> (N,)


def shares_from_log_mass(document_lse: torch.Tensor, head_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Document shares (N,) from per-document log-sum-exps (H, S, N), heads averaged or weighted as in `read_scores`."""
    shares = (document_lse - document_lse.logsumexp(dim=-1, keepdim=True)).exp()  # (H, S, N)
    if head_weights is None:
        return shares.mean(dim=(0, 1))
    return (shares.mean(dim=1) * head_weights.to(shares)[:, None]).sum(dim=0)  # (H, N) -> (N,)


RRF_K = 60  # reciprocal-rank fusion's usual constant (Cormack et al., 2009): damps the weight of the very top ranks


def fuse_with_input_order(scores: torch.Tensor, input_order_weight: float) -> torch.Tensor:
    """Reciprocal-rank fusion of the model's ranking with the input order, for candidates given best-first.

    fused_i = (1 - w) / (k + model_rank_i) + w / (k + i + 1); model ranks break ties by input index, as
    `results.rank_documents` does. Shapes: (N,) -> (N,); w = 0 keeps the model's order, w = 1 the input's.
    """
    count = scores.shape[0]
    positions = torch.arange(count, dtype=torch.float64)  # (N,) input index
    # stable sort on -score keeps input order among ties
    order = torch.sort(-scores.double(), stable=True).indices  # (N,) input index of each model rank
    model_rank = torch.empty(count, dtype=torch.float64)
    model_rank[order] = positions + 1
    fused = (1 - input_order_weight) / (RRF_K + model_rank) + input_order_weight / (RRF_K + positions + 1)
    return fused

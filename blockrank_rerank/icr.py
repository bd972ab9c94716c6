"""Zero-shot scoring in the manner of ICR (in-context re-ranking, arXiv 2410.02642), on the BlockRank layout.

ICR reads how much attention the query pays each document, summed over every layer and head, and removes
the model's query-independent bias with a second pass whose query is the content-free "N/A":

    s(t)   = sum over layers and heads of the mean attention from the query rows to document token t
    c(t)   = s_query(t) - s_N/A(t)                          (calibrated per-token score)
    doc(k) = sum of c(t) over the tokens t of document k with c(t) >= mean_k - 2 std_k

Choices made here, and why:
- The prompt is BlockRank's (SPEC 1.1): documents see only the prefix, never the query block, so their
  keys and values do not depend on the query block. Both passes therefore share the whole stream up to
  the query block; only the query block runs twice. Both copies run inside one layer loop (the stream
  once, plus a second query block that attends to the same keys), which is exactly "two forward passes
  reusing the document KV cache" without storing a cache.
- The prefix contains the query text (SPEC 1.1). The calibration pass keeps that prefix unchanged and puts
  "N/A" only in the final query block; rebuilding the prefix with "N/A" would change every document's
  keys and cost a full second forward. ICR's paper uses a plain causal prompt with the query only after
  the documents, where the same sharing holds; with our prefix the calibration measures the bias of the
  query block given the same documents, which is the part ICR's calibration is meant to remove.
- "Query rows" are all rows of the final query block (instruction, query text, answer opening), as in
  ICR's reference code, which averages over every token after the documents.
- Scores are calibrated attention mass: unbounded, may be negative, and do not sum to 1.
Attention maps are never materialised beyond the query rows: each layer's query-row attention is computed
from that layer's q and k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .attention import ATTENTION_FUNCTIONS, AttentionPlan, sdpa
from .forward import decoder_of, embed_stream, project
from .layout import BlockLayout

CALIBRATION_QUERY = "N/A"


@dataclass(frozen=True)
class ICRTokenScores:
    """Per-document-token attention mass of both passes, in stream order of document tokens."""

    query: torch.Tensor  # (Dtok,) sum over layers and heads of the mean query-row attention, real query
    calibration: torch.Tensor  # (Dtok,) the same with "N/A" in the query block
    owner: torch.Tensor  # (Dtok,) document index of each token


def query_row_attention(q_rows: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax attention of some rows over keys (fp32), averaged over rows and summed over heads.

    Shapes: q_rows (H, R, D), keys (Hkv, K, D), mask (R, K) bool -> (K,).
    """
    groups = q_rows.shape[0] // keys.shape[0]
    keys = keys.float().repeat_interleave(groups, dim=0)  # (Hkv, K, D) -> (H, K, D)
    logits = (q_rows.float() @ keys.transpose(1, 2)) * scale  # (H, R, K)
    logits = logits.masked_fill(~mask[None], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1).sum(dim=0)  # (H, R, K) -> (K,)


def _mlp(layer: Any, hidden: torch.Tensor) -> torch.Tensor:
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def icr_token_scores(model: Any, plan: AttentionPlan, calibration_block: list[int], backend: str = "torch") -> ICRTokenScores:
    """Run every layer over the stream of `plan` plus a second query block (`calibration_block` token ids).

    The second block takes the first block's position ids (it replaces it) and attends to the stream up to
    the query block plus itself, causally.
    """
    layout: BlockLayout = plan.layout
    if layout.causal_positions:
        raise ValueError("ICR scoring here needs the BlockRank layout (causal_positions=False)")
    decoder = decoder_of(model)
    device = decoder.embed_tokens.weight.device
    context = layout.query_start  # prefix + documents, shared by both passes
    first = int(layout.position_ids[context])
    hidden, cos, sin = embed_stream(decoder, layout)  # (T, C), (T, D), (T, D)
    hidden_b = decoder.embed_tokens(torch.tensor(calibration_block, dtype=torch.long, device=device))  # (Lb, C)
    positions_b = torch.arange(first, first + len(calibration_block), device=device)
    cos_b, sin_b = decoder.rotary_emb(hidden_b[None], positions_b[None])  # (1, Lb, D) each
    cos_b, sin_b = cos_b[0], sin_b[0]

    num_b = len(calibration_block)
    mask_a = plan.query_mask.to(device)  # (Lq, T)
    mask_b = torch.ones(num_b, context + num_b, dtype=torch.bool, device=device)
    mask_b[:, context:] = torch.ones(num_b, num_b, dtype=torch.bool, device=device).tril()  # (Lb, ctx + Lb)
    documents = slice(layout.prefix_length, context)
    score_a = torch.zeros(context - layout.prefix_length, device=device)
    score_b = torch.zeros_like(score_a)
    layers = decoder.layers
    for index, layer in enumerate(layers):
        attn = layer.self_attn
        x, x_b = layer.input_layernorm(hidden), layer.input_layernorm(hidden_b)
        q, k = project(attn, x, "q_proj", "q_norm", cos, sin), project(attn, x, "k_proj", "k_norm", cos, sin)  # (H|Hkv, T, D)
        q_b, k_b = project(attn, x_b, "q_proj", "q_norm", cos_b, sin_b), project(attn, x_b, "k_proj", "k_norm", cos_b, sin_b)
        keys_b = torch.cat([k[:, :context], k_b], dim=1)  # (Hkv, ctx + Lb, D)
        score_a += query_row_attention(q[:, context:], k, mask_a, attn.scaling)[documents]
        score_b += query_row_attention(q_b, keys_b, mask_b, attn.scaling)[documents]
        if index == len(layers) - 1:
            break  # the last layer's output feeds nothing that is scored
        v = attn.v_proj(x).view(x.shape[0], -1, attn.head_dim).transpose(0, 1)  # (T, Hkv * D) -> (Hkv, T, D)
        v_b = attn.v_proj(x_b).view(num_b, -1, attn.head_dim).transpose(0, 1)  # (Lb, Hkv * D) -> (Hkv, Lb, D)
        values_b = torch.cat([v[:, :context], v_b], dim=1)  # (Hkv, ctx + Lb, D)
        out = ATTENTION_FUNCTIONS[backend](q, k, v, plan, attn.scaling)  # (H, T, D)
        out_b = sdpa(q_b, keys_b, values_b, attn.scaling, mask_b)  # (H, Lb, D)
        hidden = hidden + attn.o_proj(out.transpose(0, 1).reshape(x.shape[0], -1))  # (H, T, D) -> (T, H * D)
        hidden_b = hidden_b + attn.o_proj(out_b.transpose(0, 1).reshape(num_b, -1))  # (H, Lb, D) -> (Lb, H * D)
        hidden = torch.cat([_mlp(layer, h) for h in hidden.split(1024)])
        hidden_b = _mlp(layer, hidden_b)
    _, owner = layout.document_rows()
    return ICRTokenScores(query=score_a, calibration=score_b, owner=owner.to(device))


def calibrated_document_scores(tokens: ICRTokenScores, num_documents: int) -> torch.Tensor:
    """Per document: sum of calibrated token scores, dropping tokens below the document's mean - 2 std.

    Shapes: token tensors (Dtok,) -> (N,). A one-token document keeps its token (its std is undefined).
    """
    calibrated = (tokens.query - tokens.calibration).double()  # (Dtok,)
    owner = tokens.owner
    count = torch.zeros(num_documents, dtype=calibrated.dtype, device=calibrated.device).index_add(0, owner, torch.ones_like(calibrated))
    total = torch.zeros_like(count).index_add(0, owner, calibrated)
    mean = total / count
    squared = torch.zeros_like(count).index_add(0, owner, (calibrated - mean[owner]) ** 2)
    std = torch.where(count > 1, (squared / (count - 1).clamp(min=1)).sqrt(), torch.full_like(count, float("inf")))
    keep = calibrated >= (mean - 2 * std)[owner]  # (Dtok,)
    return torch.zeros_like(count).index_add(0, owner, calibrated * keep).float()


def calibration_block(tokenizer: Any, max_block_tokens: int) -> list[int]:
    """Token ids of the final query block with the content-free query "N/A"."""
    from .tokenize import tokenize_prompt

    return tokenize_prompt(tokenizer, CALIBRATION_QUERY, [], max_block_tokens).query_block


__all__ = ["CALIBRATION_QUERY", "ICRTokenScores", "calibrated_document_scores", "calibration_block", "icr_token_scores", "query_row_attention"]

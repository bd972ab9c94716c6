"""Zero-shot scoring in the manner of ICR (in-context re-ranking, arXiv 2410.02642), on the BlockRank layout.

ICR reads how much attention the query pays each document, summed over every layer and head, and removes
the model's query-independent bias with a second pass whose query is the content-free "N/A":

    s(t)   = sum over layers and heads of the mean attention from the query rows to document token t
    c(t)   = s_query(t) - s_N/A(t)                          (calibrated per-token score)
    doc(k) = sum of c(t) over the tokens t of document k with c(t) >= mean_k - 2 std_k

Choices made here, and why:
- The prompt is BlockRank's (docs/design.md §1): documents see only the prefix, never the query block, so their
  keys and values do not depend on the query block. Both passes therefore share the whole stream up to
  the query block; only the query block runs twice. Both copies run inside one layer loop (the stream
  once, plus a second query block that attends to the same keys), which is exactly "two forward passes
  reusing the document KV cache" without storing a cache.
- The prefix contains the query text (docs/design.md §1). The calibration pass keeps that prefix unchanged and puts
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

from .attention import AttentionPlan, plan_attention
from .forward import PackedStream, decoder_of, project, run_layers
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


class QueryRowMass:
    """Accumulates, layer by layer, the attention mass both final blocks (query, "N/A") pay each document token."""

    def __init__(self, plan: AttentionPlan, device: torch.device) -> None:
        layout = plan.layout  # the extended layout: [prefix | documents | query block | calibration block]
        split = layout.query_length  # rows of plan.query_mask: the query block's, then the calibration block's
        self.blocks = [
            (slice(layout.query_start, layout.query_end), plan.query_mask[:split]),
            (slice(layout.reader_starts[0], layout.num_tokens), plan.query_mask[split:]),
        ]
        self.documents = slice(layout.prefix_length, layout.query_start)
        self.mass = [torch.zeros(layout.query_start - layout.prefix_length, device=device) for _ in self.blocks]

    def observe(self, index: int, q: torch.Tensor, k: torch.Tensor, scale: float) -> None:
        """Add one layer's query-row attention. Shapes: q (H, T, D), k (Hkv, T, D)."""
        for mass, (rows, mask) in zip(self.mass, self.blocks):
            mass += query_row_attention(q[:, rows], k, mask, scale)[self.documents]


def icr_token_scores(
    model: Any, layout: BlockLayout, calibration_block: list[int], backend: str = "torch", max_rows: int = 8192
) -> ICRTokenScores:
    """Run every layer over the stream of `layout` plus a second query block (`calibration_block` token ids).

    The second block takes the first block's position ids (it replaces it) and attends to the stream up to
    the query block plus itself, causally (`BlockLayout.with_reader_block`); both run in one pass of
    `forward.run_layers`, their attention read from each layer's q and k. The last layer only needs q and k,
    so its attention output and MLP never run.
    """
    if layout.causal_positions:
        raise ValueError("ICR scoring here needs the BlockRank layout (causal_positions=False)")
    decoder = decoder_of(model)
    device = decoder.embed_tokens.weight.device
    plan = plan_attention(layout.with_reader_block(calibration_block), max_rows, device)
    mass = QueryRowMass(plan, device)
    stream = PackedStream.start(decoder, plan, backend, observe=mass.observe)
    last = len(decoder.layers) - 1

    def read_last_layer(index: int, layer: Any, stream: PackedStream) -> None:
        if index == last:
            attn = layer.self_attn
            x = layer.input_layernorm(stream.hidden)
            q = project(attn, x, "q_proj", "q_norm", stream.cos, stream.sin)  # (H, T, D)
            k = project(attn, x, "k_proj", "k_norm", stream.cos, stream.sin)  # (Hkv, T, D)
            mass.observe(index, q, k, float(attn.scaling))

    run_layers(decoder, stream, last, read_last_layer)
    _, owner = layout.document_rows()
    return ICRTokenScores(query=mass.mass[0], calibration=mass.mass[1], owner=owner.to(device))


def calibrated_document_scores(tokens: ICRTokenScores, num_documents: int) -> torch.Tensor:
    """Per document: sum of calibrated token scores, dropping tokens below the document's mean - 2 std.

    Shapes: token tensors (Dtok,) -> (N,). A one-token document keeps its token (its std is undefined).
    """
    calibrated = (tokens.query - tokens.calibration).double()  # (Dtok,)
    owner = tokens.owner
    count = torch.zeros(num_documents, dtype=calibrated.dtype, device=calibrated.device).index_add(
        0, owner, torch.ones_like(calibrated)
    )
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


__all__ = [
    "CALIBRATION_QUERY",
    "ICRTokenScores",
    "calibrated_document_scores",
    "calibration_block",
    "icr_token_scores",
    "query_row_attention",
]

"""Exact scoring in bounded memory: documents run a chunk at a time, layer by layer, merged by log-sum-exp.

Documents never see each other (SPEC 1.2), so a document's hidden state at every layer depends only on the
prefix and itself; only the query block reads every document. The stream therefore runs layer-major:

    for each layer l < L*:
        prefix       causal attention over itself; its keys/values of layer l are kept (P tokens)
        query block  its layer-l queries attend to the prefix and to itself (causal): a partial result
        each chunk   read the chunk's hidden states, run layer l (attention to the prefix and itself, MLP),
                     fold the chunk's layer-l keys/values into the query block's partial attention with an
                     online log-sum-exp merge, write the layer's output back over the input
        query block  finish attention and MLP: its layer-l output now reflects every document
    at L*: per chunk, the signal queries' logits over the chunk's document keys, reduced to one log-sum-exp
           per (head, signal token, document); a document's share is exp(lse_doc - lse_all), averaged.

This is the one-shot computation reordered, not approximated: scores equal `forward.run_to_scoring_layer`
+ `scoring` up to float rounding. What stays resident is one layer's document hidden states (Dtok x C in
the compute dtype, in memory or spilled to a temporary file: `hidden_store.py`), one chunk's working set,
and O(N) log-sum-exps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .attention import DocumentBucket, bucket_attention, plan_buckets, sdpa
from .forward import decoder_of, mlp_sublayer, output_projection, project, project_qkv
from .hidden_store import FileStore, HiddenStore, MemoryStore
from .layout import BlockLayout

MAX_LOGITS = 1 << 20  # most (head, row, key) logits of the query block formed at once (4 MiB in fp32)


@dataclass(frozen=True)
class Chunk:
    """Consecutive documents processed together."""

    first: int  # first document index
    last: int  # one past the last document index
    start: int  # first row of the chunk among document tokens (stream index - P)
    stop: int  # one past the last row


def chunk_documents(lengths: tuple[int, ...], max_tokens: int) -> list[Chunk]:
    """Consecutive documents grouped into chunks of at most `max_tokens` tokens (a longer document is a chunk alone)."""
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
    chunks, first, start, size = [], 0, 0, 0
    for k, length in enumerate(lengths):
        if size and size + length > max_tokens:
            chunks.append(Chunk(first, k, start, start + size))
            first, start, size = k, start + size, 0
        size += length
    if size:
        chunks.append(Chunk(first, len(lengths), start, start + size))
    return chunks


@dataclass(frozen=True)
class PartialAttention:
    """Softmax attention over the keys seen so far: the normalised output and the log-sum-exp of the logits."""

    out: torch.Tensor  # (H, R, D) fp32
    lse: torch.Tensor  # (H, R) fp32, -inf for a row that has seen no key

    def merge(self, other: "PartialAttention") -> "PartialAttention":
        """Attention over the union of both key sets (online softmax). Shapes: as the fields."""
        lse = torch.logaddexp(self.lse, other.lse)  # (H, R)
        finite = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        mine, theirs = (self.lse - finite).exp()[..., None], (other.lse - finite).exp()[..., None]  # (H, R, 1)
        return PartialAttention(self.out * mine + other.out * theirs, lse)


def partial_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: Optional[torch.Tensor] = None
) -> PartialAttention:
    """Attention of rows `q` over keys `k` in fp32, formed MAX_LOGITS logits at a time.

    Shapes: q (H, R, D), k/v (Hkv, K, D), mask (R, K) bool or None -> out (H, R, D), lse (H, R).
    """
    heads, rows, _ = q.shape
    groups = heads // k.shape[0]
    step = max(1, MAX_LOGITS // (heads * rows))
    q = q.float()
    result: Optional[PartialAttention] = None
    for begin in range(0, k.shape[1], step):
        keys = k[:, begin : begin + step].float().repeat_interleave(groups, dim=0)  # (Hkv, K', D) -> (H, K', D)
        values = v[:, begin : begin + step].float().repeat_interleave(groups, dim=0)  # (Hkv, K', D) -> (H, K', D)
        logits = (q @ keys.transpose(1, 2)) * scale  # (H, R, K')
        if mask is not None:
            logits = logits.masked_fill(~mask[None, :, begin : begin + step], float("-inf"))
        lse = logits.logsumexp(dim=-1)  # (H, R)
        finite = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        piece = PartialAttention((logits - finite[..., None]).exp() @ values, lse)  # out (H, R, D)
        result = piece if result is None else result.merge(piece)
    if result is None:
        raise ValueError("partial_attention needs at least one key")
    return result


class ChunkedScorer:
    """Runs layers 0..L* of one layout chunk by chunk and returns the scores; see the module docstring."""

    def __init__(self, model: Any, layout: BlockLayout, scoring_layer: int, num_signal_tokens: int, max_rows: int = 8192) -> None:
        if layout.causal_positions:
            raise ValueError("chunked scoring needs the BlockRank layout (causal_positions=False)")
        self.decoder = decoder_of(model)
        self.layout, self.scoring_layer, self.max_rows = layout, scoring_layer, max_rows
        self.signal = layout.signal_rows(num_signal_tokens) - layout.query_start  # (S,) rows of the query block
        self.device = self.decoder.embed_tokens.weight.device
        self.dtype = self.decoder.embed_tokens.weight.dtype

    def rotary(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of stream indices start..stop-1. Shapes: (stop - start, D) each."""
        positions = self.layout.position_ids[start:stop].to(self.device)[None]  # (1, T')
        probe = torch.empty(1, dtype=self.dtype, device=self.device)
        cos, sin = self.decoder.rotary_emb(probe, positions)  # (1, T', D) each
        return cos[0], sin[0]

    def embed(self, start: int, stop: int) -> torch.Tensor:
        """Input embeddings of stream indices start..stop-1. Shapes: -> (stop - start, C)."""
        return self.decoder.embed_tokens(self.layout.input_ids[start:stop].to(self.device))

    def chunk_blocks(self, chunk: Chunk) -> tuple[DocumentBucket, ...]:
        """Length buckets of a chunk's documents, indexed by row within the chunk."""
        offset = self.layout.prefix_length + chunk.start
        starts = tuple(s - offset for s in self.layout.document_starts[chunk.first : chunk.last])
        lengths = self.layout.document_lengths[chunk.first : chunk.last]
        return plan_buckets(starts, lengths, self.layout.prefix_length, self.max_rows, self.device)

    def document_layer(
        self, layer: Any, hidden: torch.Tensor, chunk: Chunk, prefix_kv: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One layer over a chunk's documents: output hidden, keys and values. Shapes: (Tc, C) -> (Tc, C), (Hkv, Tc, D) x2."""
        attn = layer.self_attn
        base = self.layout.prefix_length
        cos, sin = self.rotary(base + chunk.start, base + chunk.stop)
        x = layer.input_layernorm(hidden)
        q, k, v = project_qkv(attn, x, cos, sin)  # (H, Tc, D), (Hkv, Tc, D), (Hkv, Tc, D)
        del x
        out = torch.empty_like(q)  # (H, Tc, D), every row written by exactly one bucket
        for bucket in self.chunk_blocks(chunk):
            out[:, bucket.index[bucket.valid]] = bucket_attention(q, k, v, prefix_kv[0], prefix_kv[1], bucket, attn.scaling)
        del q
        hidden = hidden + output_projection(attn, out)
        del out
        return mlp_sublayer(layer, hidden), k, v

    def scores(self, chunks: list[Chunk], store: HiddenStore) -> torch.Tensor:
        """Document scores in fp32, summing to 1; `store` must hold one row per document token. Shapes: -> (N,)."""
        layout, layers = self.layout, self.decoder.layers
        prefix, query_start = layout.prefix_length, layout.query_start
        for chunk in chunks:
            store.write(chunk.start, self.embed(prefix + chunk.start, prefix + chunk.stop))
        hidden_prefix = self.embed(0, prefix)  # (P, C)
        hidden_query = self.embed(query_start, layout.num_tokens)  # (Lq, C)
        cos_p, sin_p = self.rotary(0, prefix)
        cos_q, sin_q = self.rotary(query_start, layout.num_tokens)
        own = torch.ones(layout.query_length, layout.query_length, dtype=torch.bool, device=self.device).tril()  # (Lq, Lq)
        for layer in layers[: self.scoring_layer]:
            attn = layer.self_attn
            x_p = layer.input_layernorm(hidden_prefix)
            q_p, k_p, v_p = project_qkv(attn, x_p, cos_p, sin_p)  # (H, P, D), (Hkv, P, D), (Hkv, P, D)
            hidden_prefix = mlp_sublayer(layer, hidden_prefix + output_projection(attn, sdpa(q_p, k_p, v_p, attn.scaling)))
            x_q = layer.input_layernorm(hidden_query)
            q_q, k_q, v_q = project_qkv(attn, x_q, cos_q, sin_q)  # (H, Lq, D), (Hkv, Lq, D), (Hkv, Lq, D)
            state = partial_attention(q_q, k_p, v_p, attn.scaling).merge(partial_attention(q_q, k_q, v_q, attn.scaling, own))
            for chunk in chunks:
                hidden, k_c, v_c = self.document_layer(layer, store.read(chunk.start, chunk.stop), chunk, (k_p, v_p))
                store.write(chunk.start, hidden)
                state = state.merge(partial_attention(q_q, k_c, v_c, attn.scaling))
                del hidden, k_c, v_c  # free this chunk before the next one is read
            hidden_query = mlp_sublayer(layer, hidden_query + output_projection(attn, state.out.to(self.dtype)))
        return self.readout(chunks, store, hidden_query, cos_q, sin_q)

    def readout(
        self, chunks: list[Chunk], store: HiddenStore, hidden_query: torch.Tensor, cos_q: torch.Tensor, sin_q: torch.Tensor
    ) -> torch.Tensor:
        """Layer L*: per-document log-sum-exps of the signal logits, then each document's share. Shapes: -> (N,)."""
        layer = self.decoder.layers[self.scoring_layer]
        attn, base = layer.self_attn, self.layout.prefix_length
        signal = self.signal.to(self.device)
        x_s = layer.input_layernorm(hidden_query[signal])  # (S, C)
        queries = project(attn, x_s, "q_proj", "q_norm", cos_q[signal], sin_q[signal]).float()  # (H, S, D)
        heads, count, _ = queries.shape
        document_lse = torch.full((heads, count, self.layout.num_documents), float("-inf"), device=self.device)  # (H, S, N)
        for chunk in chunks:
            cos, sin = self.rotary(base + chunk.start, base + chunk.stop)
            x = layer.input_layernorm(store.read(chunk.start, chunk.stop))  # (Tc, C)
            keys = project(attn, x, "k_proj", "k_norm", cos, sin).float()  # (Hkv, Tc, D)
            keys = keys.repeat_interleave(heads // keys.shape[0], dim=0)  # (Hkv, Tc, D) -> (H, Tc, D)
            logits = (queries @ keys.transpose(1, 2)) * float(attn.scaling)  # (H, S, Tc)
            owner = self.owner(chunk)  # (Tc,)
            local = chunk.last - chunk.first
            peak = torch.full((heads, count, local), float("-inf"), device=self.device)
            peak = peak.scatter_reduce(2, owner.expand(heads, count, -1), logits, "amax")  # (H, S, Nc), order-free
            total = torch.zeros(heads, count, local, device=self.device).index_add(2, owner, (logits - peak[:, :, owner]).exp())
            document_lse[:, :, chunk.first : chunk.last] = peak + total.log()  # (H, S, Nc)
        shares = (document_lse - document_lse.logsumexp(dim=-1, keepdim=True)).exp()  # (H, S, N), sums to 1 over N
        return shares.mean(dim=(0, 1))

    def owner(self, chunk: Chunk) -> torch.Tensor:
        """Document of each row of `chunk`, counted from the chunk's first document. Shapes: (Tc,)."""
        lengths = torch.tensor(self.layout.document_lengths[chunk.first : chunk.last], device=self.device)
        return torch.repeat_interleave(torch.arange(len(lengths), device=self.device), lengths)


def chunked_scores(
    model: Any,
    layout: BlockLayout,
    scoring_layer: int,
    num_signal_tokens: int,
    chunk_tokens: int,
    *,
    spill: bool = False,
    spill_dir: Optional[str] = None,
    max_rows: int = 8192,
) -> torch.Tensor:
    """BlockRank scores (N,) of `layout` computed `chunk_tokens` document tokens at a time (fp32, sum 1).

    With `spill`, document hidden states live in a temporary file (in `spill_dir`) instead of memory.
    """
    scorer = ChunkedScorer(model, layout, scoring_layer, num_signal_tokens, max_rows)
    rows = layout.query_start - layout.prefix_length
    width = scorer.decoder.embed_tokens.weight.shape[1]
    store: HiddenStore
    if spill:
        store = FileStore(rows, width, scorer.dtype, scorer.device, spill_dir)
    else:
        store = MemoryStore(rows, width, scorer.dtype, scorer.device)
    try:
        return scorer.scores(chunk_documents(layout.document_lengths, chunk_tokens), store)
    finally:
        store.close()


__all__ = ["Chunk", "ChunkedScorer", "PartialAttention", "chunk_documents", "chunked_scores", "partial_attention"]

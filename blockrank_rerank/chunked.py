"""Exact scoring in bounded memory: documents run a chunk at a time, layer by layer, merged by log-sum-exp.

Documents never see each other (docs/design.md §2), so a document's hidden state at every layer depends only on the
prefix and itself; only the query block reads every document. The stream therefore runs layer-major:

    for each layer l < L*:
        prefix       causal attention over itself; its keys/values of layer l are kept (P tokens)
        query block  its layer-l queries attend to the prefix and to itself (causal): a partial result
        each chunk   read the chunk's hidden states, run layer l (attention to the prefix and itself, MLP),
                     fold the chunk's layer-l keys/values into the query block's partial attention with an
                     online log-sum-exp merge, write the layer's output back over the input
        query block  finish attention and MLP: its layer-l output now reflects every document
    at L*: per chunk, the signal queries' logits over the chunk's document keys, reduced to one log-sum-exp
           per (head, signal token, document); a document's share is exp(lse_doc - lse_all), averaged, and its
           relevance logit lse_doc - lse_prefix, averaged.

This is the one-shot computation reordered, not approximated: scores equal `forward.run_readout` over a
`forward.PackedStream` up to float rounding. The layer loop is `forward.run_layers`, with `ChunkedStream`
as the stream. What stays resident is one layer's document hidden states (Dtok x C in
the compute dtype, in memory or spilled to a temporary file: `hidden_store.py`), one chunk's working set,
and O(N) log-sum-exps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from .attention import DocumentBucket, bucket_attention, plan_buckets, sdpa
from .forward import (
    Readings,
    Readout,
    decoder_of,
    attention_output_and_mlp,
    normed_qkv,
    project,
    run_readout,
)
from .hidden_store import FileStore, HiddenStore, MemoryStore
from .layout import BlockLayout
from .scoring import document_log_mass, prefix_log_mass, relevance_logits, shares_from_log_mass

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


class ChunkedStream:
    """The stream of one layout, advanced layer by layer a chunk of documents at a time (see the module docstring).

    Document hidden states live in `store`; the prefix and the query block stay resident. `run_layers` drives it
    like a `forward.PackedStream`; `read` is its readout at L*.
    """

    def __init__(
        self, decoder: Any, layout: BlockLayout, chunks: list[Chunk], store: HiddenStore, max_rows: int = 8192
    ) -> None:
        if layout.causal_positions or layout.reader_starts:
            raise ValueError(
                "chunked scoring needs the BlockRank layout (causal_positions=False) with one final query block"
            )
        self.decoder, self.layout, self.chunks, self.store, self.max_rows = decoder, layout, chunks, store, max_rows
        self.device = decoder.embed_tokens.weight.device
        self.dtype = decoder.embed_tokens.weight.dtype
        prefix, query_start = layout.prefix_length, layout.query_start
        for chunk in chunks:
            store.write(chunk.start, self.embed(prefix + chunk.start, prefix + chunk.stop))
        self.hidden_prefix = self.embed(0, prefix)  # (P, C)
        self.hidden_query = self.embed(query_start, layout.num_tokens)  # (Lq, C)
        self.cos_p, self.sin_p = self.rotary(0, prefix)
        self.cos_q, self.sin_q = self.rotary(query_start, layout.num_tokens)
        query_rows = torch.arange(query_start, layout.num_tokens)
        self.query_own = layout.allowed_keys(query_rows, query_rows).to(self.device)  # (Lq, Lq): the block's own keys

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
        base = self.layout.prefix_length + chunk.start
        return plan_buckets(self.layout, range(chunk.first, chunk.last), self.max_rows, self.device, index_base=base)

    def document_layer(
        self, layer: Any, hidden: torch.Tensor, chunk: Chunk, prefix_kv: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One layer over a chunk's documents: output hidden, keys and values.

        Shapes: (Tc, C) -> (Tc, C), (Hkv, Tc, D) x2.
        """
        attn = layer.self_attn
        base = self.layout.prefix_length
        cos, sin = self.rotary(base + chunk.start, base + chunk.stop)
        q, k, v = normed_qkv(layer, hidden, cos, sin)  # (H, Tc, D), (Hkv, Tc, D), (Hkv, Tc, D)
        out: Optional[torch.Tensor] = None  # (H, Tc, D), every row written by exactly one bucket
        for bucket in self.chunk_blocks(chunk):
            rows = bucket_attention(q, k, v, prefix_kv[0], prefix_kv[1], bucket, attn.scaling)  # (H, rows, D)
            if out is None:  # in the attention's dtype, which autocast makes narrower than q's
                out = rows.new_empty(q.shape)
            out[:, bucket.rows] = rows
        del q
        return attention_output_and_mlp(layer, hidden, out), k, v

    def advance(self, index: int, layer: Any) -> None:
        """Layer `index` over the prefix, every chunk, then the query block (whose attention merges every chunk's)."""
        attn = layer.self_attn
        q_p, k_p, v_p = normed_qkv(layer, self.hidden_prefix, self.cos_p, self.sin_p)  # (H, P, D), (Hkv, P, D) x2
        self.hidden_prefix = attention_output_and_mlp(layer, self.hidden_prefix, sdpa(q_p, k_p, v_p, attn.scaling))
        q_q, k_q, v_q = normed_qkv(layer, self.hidden_query, self.cos_q, self.sin_q)  # (H, Lq, D), (Hkv, Lq, D) x2
        state = partial_attention(q_q, k_p, v_p, attn.scaling).merge(
            partial_attention(q_q, k_q, v_q, attn.scaling, self.query_own)
        )
        for chunk in self.chunks:
            hidden, k_c, v_c = self.document_layer(layer, self.store.read(chunk.start, chunk.stop), chunk, (k_p, v_p))
            self.store.write(chunk.start, hidden)
            state = state.merge(partial_attention(q_q, k_c, v_c, attn.scaling))
            del hidden, k_c, v_c  # free this chunk before the next one is read
        self.hidden_query = attention_output_and_mlp(layer, self.hidden_query, state.out.to(self.dtype))

    def read(self, layer: Any, num_signal_tokens: int, head_weights: Optional[torch.Tensor] = None) -> Readings:
        """The readout at `layer`: per-document log-sum-exps chunk by chunk, then shares and relevance logits.

        Heads are averaged or weighted as in `forward.read_layer`.
        Shapes: -> (N,) each.
        """
        attn, base, layout = layer.self_attn, self.layout.prefix_length, self.layout
        scale = float(attn.scaling)
        signal = (layout.signal_rows(num_signal_tokens) - layout.query_start).to(
            self.device
        )  # (S,) rows of the query block
        x_s = layer.input_layernorm(self.hidden_query[signal])  # (S, C)
        queries = project(attn, x_s, "q_proj", "q_norm", self.cos_q[signal], self.sin_q[signal])  # (H, S, D)
        x_p = layer.input_layernorm(self.hidden_prefix)  # (P, C)
        prefix_keys = project(attn, x_p, "k_proj", "k_norm", self.cos_p, self.sin_p)  # (Hkv, P, D)
        pieces = []
        for chunk in self.chunks:
            cos, sin = self.rotary(base + chunk.start, base + chunk.stop)
            x = layer.input_layernorm(self.store.read(chunk.start, chunk.stop))  # (Tc, C)
            keys = project(attn, x, "k_proj", "k_norm", cos, sin)  # (Hkv, Tc, D)
            pieces.append(
                document_log_mass(queries, keys, self.owner(chunk), chunk.last - chunk.first, scale)
            )  # (H, S, Nc)
        document_lse = torch.cat(pieces, dim=2)  # (H, S, N)
        prefix_lse = prefix_log_mass(queries, prefix_keys, scale)  # (H, S)
        return Readings(
            shares_from_log_mass(document_lse, head_weights),
            relevance_logits(document_lse, prefix_lse, head_weights),
        )

    def owner(self, chunk: Chunk) -> torch.Tensor:
        """Document of each row of `chunk`, counted from the chunk's first document. Shapes: (Tc,)."""
        lengths = torch.tensor(self.layout.document_lengths[chunk.first : chunk.last], device=self.device)
        return torch.repeat_interleave(torch.arange(len(lengths), device=self.device), lengths)


def chunked_scores(
    model: Any,
    layout: BlockLayout,
    readout: Union[int, Readout],
    num_signal_tokens: int,
    chunk_tokens: int,
    *,
    spill: bool = False,
    spill_dir: Optional[str] = None,
    max_rows: int = 8192,
) -> Readings:
    """BlockRank readings (shares and relevance logits, (N,) each) of `layout`, `chunk_tokens` document tokens at a
    time (fp32).

    `readout` is L* (every head of it) or a head selection ({layer: head weights}, `forward.run_readout`).
    With `spill`, document hidden states live in a temporary file (in `spill_dir`) instead of memory.
    """
    decoder = decoder_of(model)
    rows = layout.query_start - layout.prefix_length
    weight = decoder.embed_tokens.weight  # (V, C)
    store: HiddenStore
    if spill:
        store = FileStore(rows, weight.shape[1], weight.dtype, weight.device, spill_dir)
    else:
        store = MemoryStore(rows, weight.shape[1], weight.dtype, weight.device)
    layers = {readout: None} if isinstance(readout, int) else readout
    try:
        stream = ChunkedStream(decoder, layout, chunk_documents(layout.document_lengths, chunk_tokens), store, max_rows)
        return run_readout(decoder, stream, layers, num_signal_tokens)
    finally:
        store.close()


__all__ = ["Chunk", "ChunkedStream", "PartialAttention", "chunk_documents", "chunked_scores", "partial_attention"]

"""The decoder-layer runner: the one loop over decoder layers, shared by inference, ICR, the layer sweep,
training and chunked scoring.

Works with any Hugging Face causal LM whose decoder layers follow the Llama layout (Llama, Mistral, Qwen2,
Qwen3): `input_layernorm -> self_attn(q/k/v/o_proj) -> post_attention_layernorm -> mlp`. The layers'
own modules compute norms, projections and MLPs; attention is ours, so the block structure is explicit.

A *stream* holds the hidden states of one packed prompt and advances them through one layer at a time:
`PackedStream` runs the whole stream with an attention backend of the registry (`attention.py`);
`chunked.ChunkedStream` runs documents a chunk at a time in bounded memory. `run_layers` walks the layers and
calls a visitor at each layer's entry, which is where readouts happen (L*, every swept layer, ICR's last).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import torch
from torch.utils.checkpoint import checkpoint

from .attention import AttentionPlan, StreamPlan, attend
from .layout import BlockLayout
from .scoring import document_log_mass, prefix_log_mass, relevance_logits, shares_from_log_mass

TOKEN_CHUNK = 1024  # rows per chunk of the per-token steps on CPU (`token_chunks`): their activations stay in cache


@dataclass(frozen=True)
class Readings:
    """What the readout gives per document: its share of the signal attention and its relevance logit.

    Both are fp32 (N,) in input block order; `relevance_logits` is None for a mode that has none (ICR).
    """

    shares: torch.Tensor  # (N,) summing to 1 (or to the head weights read so far)
    relevance_logits: Optional[torch.Tensor] = None  # (N,) log(mass_doc / mass_prefix), heads and signal averaged


@dataclass
class ScoringState:
    """What layer L* contributes to scoring, plus the hidden state entering it (for equivalence tests)."""

    signal_queries: torch.Tensor  # (H, S, D) post-RoPE queries of the signal tokens
    document_keys: torch.Tensor  # (Hkv, Dtok, D) post-RoPE keys of every document token
    scale: float  # the layer's softmax scale, 1/sqrt(D) for these families
    hidden: torch.Tensor  # (T, C) input of layer L*
    logits: Optional[torch.Tensor] = None  # (V,) next-token logits, only when every layer ran


def decoder_of(model: Any) -> Any:
    """The decoder stack (`model.model` for *ForCausalLM, or the model itself)."""
    decoder = getattr(model, "model", model)
    for name in ("embed_tokens", "layers", "rotary_emb", "norm"):
        if not hasattr(decoder, name):
            raise TypeError(
                f"{type(model).__name__} has no decoder attribute {name!r}; expected a Llama-style causal LM"
            )
    return decoder


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding. Shapes: x (heads, T, D), cos/sin (T, D)."""
    return x * cos + rotate_half(x) * sin


def project(
    attn: Any, x: torch.Tensor, projection: str, norm: str, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """Query or key heads with RoPE. Shapes: x (T, C) -> (heads, T, D)."""
    heads = getattr(attn, projection)(x).view(x.shape[0], -1, attn.head_dim)  # (T, heads * D) -> (T, heads, D)
    if hasattr(attn, norm):  # Qwen3 normalises q and k per head
        heads = getattr(attn, norm)(heads)
    return apply_rope(heads.transpose(0, 1), cos, sin)  # (heads, T, D)


def project_values(attn: Any, x: torch.Tensor) -> torch.Tensor:
    """Value heads (no RoPE). Shapes: x (T, C) -> (Hkv, T, D)."""
    return attn.v_proj(x).view(x.shape[0], -1, attn.head_dim).transpose(0, 1)  # (T, Hkv * D) -> (Hkv, T, D)


def project_qkv(
    attn: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries and keys with RoPE, and values. Shapes: x (T, C) -> (H, T, D), (Hkv, T, D), (Hkv, T, D)."""
    return (
        project(attn, x, "q_proj", "q_norm", cos, sin),
        project(attn, x, "k_proj", "k_norm", cos, sin),
        project_values(attn, x),
    )


def output_projection(attn: Any, out: torch.Tensor) -> torch.Tensor:
    """Heads merged and projected back to the residual stream. Shapes: out (H, T, D) -> (T, C)."""
    return attn.o_proj(out.transpose(0, 1).reshape(out.shape[1], -1))  # (H, T, D) -> (T, H * D)


def token_chunks(tokens: int, device: torch.device) -> list[slice]:
    """Row ranges the per-token steps (norms, projections, RoPE, residual adds, MLP) run over: chunks of
    TOKEN_CHUNK rows on CPU, so each step's working set stays in cache rather than streaming the whole (T, C)
    stream through memory once per operation; the whole stream on accelerators, where chunks only add launches."""
    if device.type != "cpu" or tokens <= TOKEN_CHUNK:
        return [slice(0, tokens)]
    return [slice(start, min(start + TOKEN_CHUNK, tokens)) for start in range(0, tokens, TOKEN_CHUNK)]


def normed_qkv(
    layer: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer's input norm, then queries and keys with RoPE, and values, chunk by chunk (`token_chunks`).

    Shapes: hidden (T, C), cos/sin (T, D) -> (H, T, D), (Hkv, T, D), (Hkv, T, D).
    """
    attn = layer.self_attn
    parts = [
        project_qkv(attn, layer.input_layernorm(hidden[rows]), cos[rows], sin[rows])
        for rows in token_chunks(hidden.shape[0], hidden.device)
    ]
    if len(parts) == 1:
        return parts[0]
    q, k, v = (torch.cat(pieces, dim=1) for pieces in zip(*parts))  # (heads, chunk, D) pieces -> (heads, T, D)
    return q, k, v


def attention_output_and_mlp(layer: Any, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The rest of the layer after attention: output projection and residual add, then the residual MLP step,
    chunk by chunk (`token_chunks`). Shapes: hidden (T, C), out (H, T, D) -> (T, C)."""
    attn = layer.self_attn

    def rest(rows: slice) -> torch.Tensor:
        mixed = hidden[rows] + output_projection(attn, out[:, rows])  # (chunk, C)
        return mixed + layer.mlp(layer.post_attention_layernorm(mixed))

    parts = [rest(rows) for rows in token_chunks(hidden.shape[0], hidden.device)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


AttentionObserver = Callable[[torch.Tensor, torch.Tensor, float], None]  # (q (H, T, D), k (Hkv, T, D), scale)


def decoder_layer(
    layer: Any,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    plan: StreamPlan,
    backend: str,
    observe: Optional[AttentionObserver] = None,
) -> torch.Tensor:
    """One full decoder layer over a stream; `observe` sees its post-RoPE q and k.

    Shapes: hidden (T, C) -> (T, C).
    """
    attn = layer.self_attn
    q, k, v = normed_qkv(layer, hidden, cos, sin)  # (H, T, D), (Hkv, T, D), (Hkv, T, D)
    if observe is not None:
        observe(q, k, float(attn.scaling))
    out = attend(backend, q, k, v, plan, attn.scaling)  # (H, T, D)
    del q, k, v
    return attention_output_and_mlp(layer, hidden, out)


class Stream(Protocol):
    """Hidden states of one prompt that `run_layers` advances one decoder layer at a time."""

    def advance(self, index: int, layer: Any) -> None: ...


Visitor = Callable[[int, Any, Any], None]  # (layer index, layer, stream), at the layer's entry


def run_layers(decoder: Any, stream: Stream, layers: int, visit: Optional[Visitor] = None) -> None:
    """The one loop over decoder layers: layers 0..`layers`-1 advance `stream`.

    `visit(index, layer, stream)` runs at the entry of every layer 0..`layers` that exists, before it runs;
    so with `layers=L*` a visitor reads layer L*'s projections of the hidden state entering it, and no layer
    from L* on ever runs (early exit).
    """
    for index, layer in enumerate(decoder.layers[: layers + 1]):
        if visit is not None:
            visit(index, layer, stream)
        if index < layers:
            stream.advance(index, layer)


@dataclass
class PackedStream:
    """The whole packed stream of one prompt, or of several end to end (a `PromptPack`), at once; attention by a
    backend of the registry, per prompt."""

    plan: StreamPlan
    backend: str
    hidden: torch.Tensor  # (T, C)
    cos: torch.Tensor  # (T, D)
    sin: torch.Tensor  # (T, D)
    gradient_checkpointing: bool = False  # non-reentrant recompute in training; an observer is not supported with it
    observe: Optional[Callable[[int, torch.Tensor, torch.Tensor, float], None]] = None  # (layer index, q, k, scale)

    @classmethod
    def start(cls, decoder: Any, plan: StreamPlan, backend: str, **options: Any) -> "PackedStream":
        """The embedded stream of `plan`'s prompts, ready for layer 0."""
        hidden, cos, sin = embed_stream(decoder, *(prompt.layout for _, prompt in plan.segments()))
        return cls(plan, backend, hidden, cos, sin, **options)

    def advance(self, index: int, layer: Any) -> None:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            self.hidden = checkpoint(
                decoder_layer, layer, self.hidden, self.cos, self.sin, self.plan, self.backend, use_reentrant=False
            )
            return
        observe = None if self.observe is None else (lambda q, k, scale: self.observe(index, q, k, scale))
        self.hidden = decoder_layer(layer, self.hidden, self.cos, self.sin, self.plan, self.backend, observe)

    def scoring_projections(self, layer: Any, num_signal_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Signal queries (H, S, D) and document keys (Hkv, Dtok, D) of `layer` for the hidden state entering it
        (a stream of one prompt)."""
        if not isinstance(self.plan, AttentionPlan):
            raise TypeError("scoring_projections reads a stream of one prompt; read() reads a packed one")
        return scoring_projections(layer, self.hidden, self.cos, self.sin, self.plan.layout, num_signal_tokens)

    def read(self, layer: Any, num_signal_tokens: int, head_weights: Optional[torch.Tensor] = None) -> Readings:
        """The readout at `layer` for the hidden state entering it: shares and relevance logits against the
        prefix, each prompt's documents after the previous prompt's. Shapes: -> (N,) each, N the documents of all
        prompts."""
        parts = [
            read_prompt(
                layer,
                self.hidden[rows],
                self.cos[rows],
                self.sin[rows],
                prompt.layout,
                num_signal_tokens,
                head_weights,
            )
            for rows, prompt in self.plan.segments()
        ]
        if len(parts) == 1:
            return parts[0]
        return Readings(
            torch.cat([part.shares for part in parts]), torch.cat([part.relevance_logits for part in parts])
        )


def read_prompt(
    layer: Any,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    layout: BlockLayout,
    num_signal_tokens: int,
    head_weights: Optional[torch.Tensor] = None,
) -> Readings:
    """The readout at `layer` of one prompt's stream. Shapes: hidden (T, C), cos/sin (T, D) -> (N,) each."""
    queries, keys = scoring_projections(layer, hidden, cos, sin, layout, num_signal_tokens)
    attn = layer.self_attn
    _, owner = layout.document_rows()
    prefix = slice(0, layout.prefix_length)
    x_prefix = layer.input_layernorm(hidden[prefix])  # (P, C)
    prefix_keys = project(attn, x_prefix, "k_proj", "k_norm", cos[prefix], sin[prefix])  # (Hkv, P, D)
    return read_layer(
        queries,
        keys,
        prefix_keys,
        owner,
        layout.num_documents,
        float(attn.scaling),
        head_weights=head_weights,
    )


def read_layer(
    signal_queries: torch.Tensor,
    document_keys: torch.Tensor,
    prefix_keys: torch.Tensor,
    document_index: torch.Tensor,
    num_documents: int,
    scale: float,
    *,
    head_weights: Optional[torch.Tensor] = None,
) -> Readings:
    """One layer's readings from its signal queries (H, S, D), document keys (Hkv, Dtok, D) and prefix keys
    (Hkv, P, D); `document_index` (Dtok,) names each token's document (or block).

    Shares and relevance logits both come from one set of per-document log-sum-exps, (H, S, N), so the
    signal logits are computed once (the fused Triton share kernel, `scoring.read_scores(fused=True)`, would
    have to compute them a second time for the relevance logits).
    """
    document_lse = document_log_mass(signal_queries, document_keys, document_index, num_documents, scale)  # (H, S, N)
    relevance = relevance_logits(document_lse, prefix_log_mass(signal_queries, prefix_keys, scale), head_weights)
    return Readings(shares_from_log_mass(document_lse, head_weights), relevance)


def embed_stream(decoder: Any, *layouts: BlockLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token embeddings and the rotary tables of the stream of `layouts` laid end to end (one, unless packed).

    Shapes: (T, C), (T, D), (T, D) with T the layouts' tokens together.
    """
    device = decoder.embed_tokens.weight.device
    input_ids = torch.cat([layout.input_ids for layout in layouts])  # (T,)
    position_ids = torch.cat([layout.position_ids for layout in layouts])  # (T,)
    hidden = decoder.embed_tokens(input_ids.to(device))  # (T, C)
    cos, sin = decoder.rotary_emb(hidden[None], position_ids.to(device)[None])  # (1, T, D) each
    return hidden, cos[0], sin[0]


def scoring_projections(
    layer: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: BlockLayout, num_signal_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-RoPE queries of the signal rows and keys of every document token at `layer` (L*).

    Shapes: hidden (T, C) entering L* -> signal queries (H, S, D), document keys (Hkv, Dtok, D).
    """
    attn = layer.self_attn
    signal = layout.signal_rows(num_signal_tokens).to(hidden.device)
    rows = layout.document_rows()[0].to(hidden.device)
    x_signal = layer.input_layernorm(hidden[signal])  # (S, C)
    x_docs = layer.input_layernorm(hidden[rows])  # (Dtok, C)
    queries = project(attn, x_signal, "q_proj", "q_norm", cos[signal], sin[signal])
    keys = project(attn, x_docs, "k_proj", "k_norm", cos[rows], sin[rows])
    return queries, keys


Readout = dict[int, Optional[torch.Tensor]]  # layer -> weights of its query heads (H,), or None: their mean


class ScoredStream(Stream, Protocol):
    """A stream that can also read documents at a layer's entry (`PackedStream`, `chunked.ChunkedStream`)."""

    def read(self, layer: Any, num_signal_tokens: int, head_weights: Optional[torch.Tensor] = None) -> Readings: ...


def run_readout(
    decoder: Any,
    stream: ScoredStream,
    readout: Readout,
    num_signal_tokens: int,
    last_layer: Optional[int] = None,
) -> Readings:
    """Each layer of `readout` read as the stream reaches it; shares summed, relevance logits summed with the
    layer's weight (1 for the mean over its heads, else its heads' weights, which sum to 1 over all layers).

    Layers run up to the deepest layer of `readout` (early exit), or up to `last_layer` when given.
    """
    parts: list[Readings] = []

    def read_layer(index: int, layer: Any, stream: ScoredStream) -> None:
        if index in readout:
            parts.append(stream.read(layer, num_signal_tokens, readout[index]))

    run_layers(decoder, stream, max(readout) if last_layer is None else last_layer, read_layer)
    shares = torch.stack([part.shares for part in parts]).sum(dim=0)  # (layers read, N) -> (N,)
    relevance = torch.stack([part.relevance_logits for part in parts]).sum(dim=0)  # (layers read, N) -> (N,)
    return Readings(shares, relevance)


def run_to_scoring_layer(
    model: Any,
    plan: AttentionPlan,
    scoring_layer: int,
    num_signal_tokens: int,
    backend: str = "torch",
    early_exit: bool = True,
) -> ScoringState:
    """Run layers 0..L*-1 over the stream and read queries/keys at L*; with `early_exit=False` finish the model."""
    decoder = decoder_of(model)
    stream = PackedStream.start(decoder, plan, backend)
    read: dict[str, Any] = {}

    def read_scoring_layer(index: int, layer: Any, stream: PackedStream) -> None:
        if index == scoring_layer:
            queries, keys = stream.scoring_projections(layer, num_signal_tokens)
            read["state"] = ScoringState(queries, keys, float(layer.self_attn.scaling), stream.hidden)

    run_layers(decoder, stream, scoring_layer if early_exit else len(decoder.layers), read_scoring_layer)
    state: ScoringState = read["state"]
    if not early_exit:
        last = decoder.norm(stream.hidden[-1:])  # (1, C)
        state.logits = model.lm_head(last)[0] if hasattr(model, "lm_head") else None
    return state

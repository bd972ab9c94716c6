"""The BlockRank training objective (docs/design.md §5): next-token loss on the answer plus InfoNCE on layer-L* scores.

The forward is the inference path itself (`forward.run_layers` over the packed block-sparse stream,
tested equal to the dense reference), run through every layer so the answer tokens get logits, with the
scores read at L* by the same readout as `BlockRank.score`. Gradient checkpointing is non-reentrant, so the
auxiliary loss's gradient reaches the layers below L* through the recomputed activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from ..attention import AttentionPlan
from ..forward import PackedStream, decoder_of, run_layers, scoring_projections
from ..layout import BlockLayout
from ..scoring import read_scores


@dataclass
class TrainingOutputs:
    """What the losses need from one forward."""

    scores: torch.Tensor  # (N,) fp32 document scores at L*, summing to 1
    answer_logits: Optional[torch.Tensor] = None  # (A, V) logits predicting each completion token (None: scoring only)
    answer_targets: Optional[torch.Tensor] = None  # (A,) the completion token ids


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor  # L_ntp + aux_weight * L_aux
    next_token: torch.Tensor
    contrastive: torch.Tensor


def training_forward(
    model: Any,
    plan: AttentionPlan,
    scoring_layer: int,
    num_signal_tokens: int,
    *,
    backend: str = "torch",
    gradient_checkpointing: bool = False,
    scoring_only: bool = False,
) -> TrainingOutputs:
    """Every decoder layer over the stream; scores at L* and logits of the completion rows.

    `scoring_only` runs layers 0..L*-1 and reads the scores, as inference does: no layer from L* on and no
    LM head runs, so only what scoring reads is trained (no next-token loss).
    """
    layout = plan.layout
    if layout.completion_length < 1:
        raise ValueError("a training layout needs a completion (build_layout(..., completion=...))")
    decoder = decoder_of(model)
    if not 0 <= scoring_layer < len(decoder.layers):
        raise ValueError(f"scoring_layer={scoring_layer} but the model has {len(decoder.layers)} layers")
    stream = PackedStream.start(decoder, plan, backend, gradient_checkpointing=gradient_checkpointing)
    read: dict[str, torch.Tensor] = {}

    def read_scoring_layer(index: int, layer: Any, stream: PackedStream) -> None:
        if index == scoring_layer:
            queries, keys = stream.scoring_projections(layer, num_signal_tokens)
            read["scores"] = read_scores(
                queries, keys, layout.document_rows()[1], layout.num_documents, float(layer.self_attn.scaling)
            )

    run_layers(decoder, stream, scoring_layer if scoring_only else len(decoder.layers), read_scoring_layer)
    if scoring_only:
        return TrainingOutputs(scores=read["scores"])
    start = layout.completion_start
    predicting = decoder.norm(stream.hidden[start - 1 : layout.num_tokens - 1])  # (A, C): row t predicts token t + 1
    targets = layout.input_ids[start:].to(stream.hidden.device)  # (A,)
    return TrainingOutputs(scores=read["scores"], answer_logits=model.lm_head(predicting), answer_targets=targets)


def batched_dense_forward(
    model: Any, layouts: Sequence[BlockLayout], scoring_layer: int, num_signal_tokens: int
) -> list[TrainingOutputs]:
    """The model's own forward over a padded batch of prompts with an explicit float 4-D BlockRank mask.

    This is the dense reference's computation (one flat sequence per prompt, explicit mask and position
    ids) batched, for accelerators where a few large kernels beat many small ones: O(T^2) attention per
    prompt, but one launch sequence for the whole batch. Padding is masked as key and as query (a padded
    row attends only to itself, so no row is empty). Scores and logits equal `training_forward`'s.
    """
    decoder = decoder_of(model)
    device = decoder.embed_tokens.weight.device
    width = (
        -(-max(layout.num_tokens for layout in layouts) // 64) * 64
    )  # aligned, so SDPA uses the mask without copying it
    input_ids = torch.zeros(len(layouts), width, dtype=torch.long, device=device)  # (B, T)
    position_ids = torch.zeros_like(input_ids)  # (B, T)
    allowed = torch.eye(width, dtype=torch.bool, device=device).repeat(len(layouts), 1, 1)  # (B, T, T)
    for b, layout in enumerate(layouts):
        n = layout.num_tokens
        input_ids[b, :n] = layout.input_ids.to(device)
        position_ids[b, :n] = layout.position_ids.to(device)
        allowed[b, :n, :n] = layout.allowed_on(device)
    dtype = (
        torch.get_autocast_dtype(device.type)
        if torch.is_autocast_enabled(device.type)
        else decoder.embed_tokens.weight.dtype
    )
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)[
        :, None
    ]  # (B, 1, T, T)
    out = decoder(
        input_ids=input_ids, attention_mask=mask, position_ids=position_ids, output_hidden_states=True, use_cache=False
    )
    entering = out.hidden_states[scoring_layer]  # (B, T, C): input of layer L*
    layer = decoder.layers[scoring_layer]
    results = []
    for b, layout in enumerate(layouts):
        n, start = layout.num_tokens, layout.completion_start
        cos, sin = decoder.rotary_emb(entering[b : b + 1, :n], position_ids[b : b + 1, :n])  # (1, n, D) each
        queries, keys = scoring_projections(layer, entering[b, :n], cos[0], sin[0], layout, num_signal_tokens)
        scores = read_scores(
            queries, keys, layout.document_rows()[1], layout.num_documents, float(layer.self_attn.scaling)
        )  # (N,)
        logits = model.lm_head(out.last_hidden_state[b, start - 1 : n - 1])  # (A, V); last_hidden_state is normed
        results.append(TrainingOutputs(scores=scores, answer_logits=logits, answer_targets=input_ids[b, start:n]))
    return results


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the completion tokens, in fp32. Shapes: (A, V), (A,) -> ()."""
    return F.cross_entropy(logits.float(), targets)


def contrastive_loss(scores: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over one prompt's documents: -(logsumexp(S_pos / τ) - logsumexp(S_all / τ)). Shapes: (N,), (N,) -> ()."""
    if not bool(positives.any()):
        raise ValueError("a training prompt needs at least one positive document")
    logits = scores.float() / temperature
    return -(torch.logsumexp(logits[positives], dim=0) - torch.logsumexp(logits, dim=0))


def blockrank_loss(
    outputs: TrainingOutputs,
    positives: torch.Tensor,
    *,
    aux_weight: float,
    temperature: float,
    next_token_weight: float = 1.0,
) -> LossTerms:
    """L = w · L_ntp + λ · L_aux for one prompt (w = `next_token_weight`; L_ntp is 0 without answer logits)."""
    aux = contrastive_loss(outputs.scores, positives.to(outputs.scores.device), temperature)
    if outputs.answer_logits is None:
        ntp = torch.zeros((), device=aux.device)
    else:
        ntp = next_token_loss(outputs.answer_logits, outputs.answer_targets)
    return LossTerms(total=next_token_weight * ntp + aux_weight * aux, next_token=ntp, contrastive=aux)

"""Dense reference: the whole prompt as one flat sequence through the model's own eager attention.

An explicit float 4-D mask and explicit position ids go into the Hugging Face forward; scores come from the
attention probabilities the model itself returns at layer L*, restricted to document columns and
renormalised (softmax over a subset equals the renormalised full softmax). Tests use it as the oracle.
"""

from __future__ import annotations

from typing import Any

import torch

from .layout import BlockLayout
from .scoring import document_scores


@torch.no_grad()
def dense_reference(
    model: Any, layout: BlockLayout, scoring_layer: int, num_signal_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (N,) and the hidden state entering layer L* (T, C), computed the slow, obvious way."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        allowed = layout.allowed()  # (T, T)
        mask = torch.zeros(allowed.shape, dtype=model.dtype).masked_fill(~allowed, torch.finfo(model.dtype).min)
        out = model.model(
            input_ids=layout.input_ids[None],
            attention_mask=mask[None, None],  # (1, 1, T, T)
            position_ids=layout.position_ids[None],
            output_attentions=True,
            output_hidden_states=True,
            use_cache=False,
        )
    finally:
        model.set_attn_implementation(previous)
    attention = out.attentions[scoring_layer][0].float()  # (H, T, T)
    rows, owner = layout.document_rows()
    signal = attention[:, layout.signal_rows(num_signal_tokens)][:, :, rows]  # (H, S, Dtok)
    signal = signal / signal.sum(dim=-1, keepdim=True)
    return document_scores(signal, owner, layout.num_documents), out.hidden_states[scoring_layer][0]

"""Layer sweep: BlockRank scores at every candidate scoring layer from one forward, and nDCG@10 per layer.

One pass of `forward.run_layers` runs the decoder up to the highest requested layer and, at each requested
layer's entry, reads the signal queries and document keys with the same readout as inference at L*; so the
scores of layer l equal those of a ranker configured with `scoring_layer=l` (tests check this).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..attention import plan_attention
from ..forward import PackedStream, decoder_of, run_layers
from ..layout import BlockLayout
from ..scoring import head_document_shares, signal_attention
from .data import CandidateRun


def scores_per_layer(
    engine: Any, layout: BlockLayout, layers: Sequence[int], *, per_head: bool = False
) -> dict[int, torch.Tensor]:
    """BlockRank scores (N,) of `layout` at each of `layers`, from a single forward up to max(layers).

    With `per_head`, each layer gives every head's document shares instead, (H, N) (`evaluation.heads`).
    """
    wanted = sorted(set(layers))
    if not wanted or wanted[0] < 0 or wanted[-1] >= engine.num_layers:
        raise ValueError(f"layers must lie in 0..{engine.num_layers - 1}, got {list(layers)}")
    decoder = decoder_of(engine.model)
    plan = plan_attention(layout, engine.config.batch_tokens, engine.device)
    _, owner = layout.document_rows()
    results: dict[int, torch.Tensor] = {}

    def read_layer(index: int, layer: Any, stream: PackedStream) -> None:
        if index not in wanted:
            return
        if per_head:
            queries, keys = stream.scoring_projections(layer, engine.config.num_signal_tokens)
            scale = float(layer.self_attn.scaling)
            attention = signal_attention(queries, keys, scale)  # (H, S, Dtok)
            results[index] = head_document_shares(attention, owner, layout.num_documents).cpu()
        else:
            results[index] = stream.read(layer, engine.config.num_signal_tokens).shares.cpu()

    with engine.lock, torch.inference_mode(), engine.precision():
        run_layers(decoder, PackedStream.start(decoder, plan, engine.backend), wanted[-1], read_layer)
    return results


def sweep_layers(
    engine: Any,
    run: CandidateRun,
    qids: Sequence[str],
    *,
    depth: int,
    binary_threshold: int,
    layers: Optional[Sequence[int]] = None,
    output: Optional[Path] = None,
    show_progress_bar: bool = True,
) -> dict[str, Any]:
    """nDCG@10 (and MRR@10) per scoring layer over `qids`, beside the first stage; written to `output` as JSON."""
    from .metrics import compute_metrics, order_to_scores, ranks_to_scores

    layers = list(range(engine.num_layers)) if layers is None else sorted(set(layers))
    per_layer: dict[int, dict[str, dict[str, float]]] = {layer: {} for layer in layers}
    first_stage: dict[str, dict[str, float]] = {}
    seconds = []
    for qid in tqdm(list(qids), desc=f"layer sweep on {run.name}", unit="query", disable=not show_progress_bar):
        candidates = run.candidates[qid][:depth]
        docids = [c.docid for c in candidates]
        start = time.perf_counter()
        scores = scores_per_layer(engine, engine.layout(run.queries[qid], [c.text.strip() for c in candidates]), layers)
        seconds.append(time.perf_counter() - start)
        for layer, values in scores.items():
            per_layer[layer][qid] = order_to_scores(docids, values.tolist())
        first_stage[qid] = ranks_to_scores(docids)
    metrics = {layer: compute_metrics(run_, run.qrels, depth, binary_threshold) for layer, run_ in per_layer.items()}
    best = max(layers, key=lambda layer: (metrics[layer]["nDCG@10"], -layer))
    result = {
        "model": engine.name,
        "dataset": run.name,
        "depth": depth,
        "num_queries": len(qids),
        "qids": list(qids),
        "num_layers": engine.num_layers,
        "default_layer": engine.scoring_layer,
        "best_layer": best,
        "layers": {str(layer): metrics[layer] for layer in layers},
        "first_stage_metrics": compute_metrics(first_stage, run.qrels, depth, binary_threshold),
        "seconds_per_query": sum(seconds) / max(len(seconds), 1),
    }
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=2) + "\n")
    return result

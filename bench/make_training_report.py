"""Write the measured part of docs/training.md: how the shipped adapter was trained, its losses and its quality.

Reads only committed records: the adapter's `blockrank.json` (configuration, steps, time, device), its training
log (`docs/results/training-smollm2-135m-blockrank.log.jsonl`) and the harness summaries in `docs/results/`
(written by `blockrank eval`, see bench/results_runs.sh phase `trained`). Nothing is typed by hand.
Usage: python bench/make_training_report.py
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import write_section  # noqa: E402
from make_results import block_settings, devices_note, load_summaries, metric_names  # noqa: E402

from blockrank_rerank.training.trainer import TrainConfig  # noqa: E402

ADAPTER = ROOT / "blockrank_rerank" / "models" / "smollm2-135m-blockrank"
LOG = ROOT / "docs" / "results" / "training-smollm2-135m-blockrank.log.jsonl"
REPORT = ROOT / "docs" / "training.md"
ROWS = {
    "first-stage": "BM25 (first stage)",
    "blockrank": "untrained SmolLM2-135M-Instruct, BlockRank scoring",
    "blockrank-trained": "**trained: SmolLM2-135M-Instruct + our BlockRank LoRA**",
}


def command(training: dict) -> str:
    """The `blockrank train` command line equal to the recorded configuration (only non-default fields)."""
    parts = ["blockrank train"]
    for field in dataclasses.fields(TrainConfig):
        value = training.get(field.name, field.default)
        value = tuple(value) if isinstance(value, list) else value
        if field.name == "output_dir" or value == field.default:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts.append(f"{flag} {','.join(value) if isinstance(value, tuple) else value}")
    return " \\\n    ".join(parts)


def loss_table(log: list[dict], prompts_per_step: int, bucket: int = 100) -> list[str]:
    lines = ["| steps | prompts seen | mean next-token loss | mean InfoNCE loss |", "|---|---|---|---|"]
    for start in range(0, len(log), bucket):
        chunk = log[start : start + bucket]
        lines.append(
            f"| {chunk[0]['step']}–{chunk[-1]['step']} | {chunk[-1]['step'] * prompts_per_step} | "
            f"{statistics.fmean(r['ntp'] for r in chunk):.3f} | {statistics.fmean(r['aux'] for r in chunk):.3f} |"
        )
    return lines


def plot_losses(log: list[dict], path: Path, window: int = 25) -> None:
    steps = [r["step"] for r in log]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("ntp", "next-token loss"), ("aux", "InfoNCE loss (L_aux)")):
        values = [r[key] for r in log]
        smooth = [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]
        ax.plot(steps, smooth, label=f"{label}, moving mean of {window}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quality_tables(summaries: list[dict]) -> list[str]:
    """One table per (dataset, depth, query set) that has a trained row, with BM25 and the untrained model beside it.

    A model measured under several block settings gets one row per setting, each labelled with it.
    """
    out: list[str] = []
    verdicts: list[str] = []
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for s in summaries:
        if s["method"] in ROWS:
            groups.setdefault((s["dataset"], s["depth"], tuple(s["qids"])), {}).setdefault(s["method"], []).append(s)
    for (dataset, depth, qids), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], -len(kv[0][2]))):
        if "blockrank-trained" not in rows:
            continue
        current = current_trained(rows["blockrank-trained"])
        shipped = current is not None
        current = current or rows["blockrank-trained"][0]
        names = [n for n in metric_names(current) if n.startswith(("nDCG", "RR"))]
        out += [
            f"### {dataset}, BM25 top-{depth}, {len(qids)} queries",
            "",
            "| model | " + " | ".join(names) + " | s/query |",
            "|" + "---|" * (len(names) + 2),
        ]
        bm25 = current["first_stage_metrics"]
        out.append(f"| {ROWS['first-stage']} | " + " | ".join(f"{bm25[n]:.4f}" for n in names) + " | — |")
        for method in ("blockrank", "blockrank-trained"):
            if method not in rows:
                out.append(f"| {ROWS[method]} | " + " | ".join("not run" for _ in names) + " | — |")
            for s in sorted(rows.get(method, []), key=block_settings):
                out.append(
                    f"| {ROWS[method]}; {block_settings(s)} | "
                    + " | ".join(f"{s['metrics'][n]:.4f}" for n in names)
                    + f" | {s['seconds_per_query']['mean']:.2f}{devices_note(s)} |"
                )
        trained = current["metrics"]["nDCG@10"]
        verdict = "beats" if trained > bm25["nDCG@10"] else "does not beat"
        if shipped and depth == 100:
            verdicts.append(
                f"{dataset} top-100 ({len(qids)} queries): {trained:.4f} vs BM25 {bm25['nDCG@10']:.4f}, {verdict}"
            )
        where = (
            f"At its shipped settings ({block_settings(current)})"
            if shipped
            else f"Not yet measured at its shipped settings; at {block_settings(current)}"
        )
        out += [
            "",
            f"{where} the trained model {verdict} BM25 here (nDCG@10 {trained:.4f} vs {bm25['nDCG@10']:.4f}).",
            "",
        ]
    target = [
        "**Our target for this model, beating BM25 on DL19 top-100 and SciFact test top-100, at its shipped settings "
        "(nDCG@10):**",
        "",
        *[f"- {v}" for v in verdicts or ["not yet measured at the shipped settings"]],
        "",
    ]
    return target + out


def current_trained(summaries: list[dict]) -> Optional[dict]:
    """The trained model's summary at the settings the shipped checkpoint records, if one was measured."""
    settings = json.loads((ADAPTER / "blockrank.json").read_text())["settings"]
    for s in summaries:
        if all(s.get("settings", {}).get(k) == settings.get(k) for k in ("max_block_tokens", "query_position_offset")):
            return s
    return None


RUN17 = ROOT / "docs" / "results" / "issue17-h200"  # records of the lent-GPU run of bench/gpu_quality_run.sh


def first_stage_dev(selection: dict) -> float:
    """BM25's nDCG@10 on the dev queries a selection summary lists: each dataset's mean, averaged (as heads.py does)."""
    from blockrank_rerank.evaluation.evaluate import BINARY_THRESHOLDS, load_dataset
    from blockrank_rerank.evaluation.metrics import compute_metrics, ranks_to_scores

    means = []
    for name, qids in selection["dev_queries"].items():
        run = load_dataset(name)
        ranking = {q: ranks_to_scores([c.docid for c in run.candidates[q][: selection["depth"]]]) for q in qids}
        means.append(compute_metrics(ranking, run.qrels, selection["depth"], BINARY_THRESHOLDS[name])["nDCG@10"])
    return sum(means) / len(means)


def issue17_section() -> list[str]:
    """The lent-GPU run of issue 17: training variants, the dev-set choice, head selection and the reporting runs."""
    progress = (RUN17 / "progress.txt").read_text().splitlines()
    choice = json.loads((RUN17 / "choice.json").read_text())
    config = json.loads((RUN17 / "train-A.blockrank.json").read_text())["training"]
    log_a = [json.loads(line) for line in (RUN17 / "train-A.log.jsonl").read_text().splitlines() if line.strip()]
    log_b = [json.loads(line) for line in (RUN17 / "train-B.log.jsonl").read_text().splitlines() if line.strip()]
    error_b = (RUN17 / "train-B.error.txt").read_text().strip()
    shipped_log = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]
    shipped_aux = statistics.fmean(r["aux"] for r in shipped_log[-100:])
    rows = []
    for name, label in (("shipped", "shipped adapter (control)"), ("A", "A: warm start, next-token + InfoNCE")):
        dev = json.loads((RUN17 / f"dev-{name}.json").read_text())
        fold = dev["two_fold"]
        counts = ", ".join(f"{k} {v}" for k, v in dev["num_dev_queries"].items())
        rows.append(
            f"| {label} | {counts} | {first_stage_dev(dev):.4f} | "
            f"{dev['dev_ndcg@10_all_heads_at_scoring_layer']:.4f} | "
            f"{dev['dev_ndcg@10_selected']:.4f} ({dev['distinct_heads']} heads) | "
            f"{fold['held_out_selected']:.4f} vs {fold['held_out_all_heads_at_scoring_layer']:.4f} |"
        )
    prompts = log_a[-1]["step"] * config["prompts_per_step"]
    reporting = [json.loads(path.read_text()) for path in sorted(RUN17.glob("eval-*.json"))]
    return [
        "## Issue 17: one run on a lent H200 (measured; the default did not change)",
        "",
        "Generated by `python bench/make_training_report.py` from the records in `docs/results/issue17-h200/` that",
        "`bench/gpu_quality_run.sh` wrote (its timeline: `progress.txt`). The run trained two variants for "
        f"{config['max_minutes']} minutes each, side by side on the one GPU, warm-started from the shipped adapter "
        f"(`--init-adapter`), with mixed list sizes ({config['num_candidates']}..{config['max_candidates']} "
        "candidates per prompt) and the default sources, which leave the dev data out "
        f"({', '.join(config['sources'])}):",
        "",
        f"- A (next-token loss + InfoNCE, λ = {config['aux_weight']}): {log_a[-1]['step']} optimizer steps x "
        f"{config['prompts_per_step']} prompts = {prompts} prompts in {log_a[-1]['seconds']:.0f} s "
        f"({prompts / log_a[-1]['seconds']:.2f} prompts/s, {config['forward']} forward, {config['dtype']}, torch "
        f"{config['torch']}). InfoNCE at these list sizes: {log_a[0]['aux']:.2f} at step 1, "
        f"{statistics.fmean(r['aux'] for r in log_a[-5:]):.2f} over the last 5 steps; the shipped adapter's, at 30 "
        f"candidates, averaged {shipped_aux:.2f} over its last 100 steps (single steps vary widely: these prompts "
        "are not comparable one by one).",
        f"- B (InfoNCE only, `--next-token-weight 0`): stopped after step {log_b[-1]['step']} with "
        f"`{error_b.replace('blockrank: error: ', '').split(' (Could')[0].strip()}`: "
        "cuDNN's attention backward failed on a per-block shape. Training now keeps cuDNN attention out of the "
        "packed forward and its recompute on CUDA (`trainer.cuda_attention_kernels`); not yet rerun on a GPU.",
        "",
        "The choice, on dev data only (DL21 BM25 top-100 and scifact-dev, the 150 SciFact train claims held out from",
        "training; the collection stopped at its time limit, so scifact-dev is partial and the counts differ "
        "slightly). nDCG@10, each dataset's mean averaged:",
        "",
        "| model | dev queries | BM25 | every head of L* | head selection (chosen on these queries) | "
        "two-fold: selected vs every head, on held-out halves |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Chosen: **{choice['chosen']}**, "
        + ("with" if choice["heads"] else "without")
        + " head selection: the greedy head selection gains on the queries it is chosen on but loses on held-out",
        f"queries (two-fold column), so it is not applied; the {prompts} prompts of variant A did not help on dev.",
        "The comparison favours the control: the shipped adapter was trained on DL21 and on every SciFact train claim,",
        "scifact-dev included, while A's additional prompts left both out.",
        "The shipped default is unchanged. Its reporting figures, rerun on the GPU in the same run (the same",
        "scores as on the CPU where both exist):",
        "",
        "| dataset | depth | queries | nDCG@10 | BM25 | s/query |",
        "|---|---|---|---|---|---|",
        *[
            f"| {s['dataset']} | {s['depth']} | {s['num_queries']} | {s['metrics']['nDCG@10']:.4f} | "
            f"{s['first_stage_metrics']['nDCG@10']:.4f} | {s['seconds_per_query']['mean']:.2f} |"
            for s in sorted(reporting, key=lambda s: (s["dataset"], -s["depth"]))
        ],
        "",
        "What the run showed: the GPU trainer is slow on this path (packed forward, one backward per prompt, two",
        "processes sharing the GPU), so a few minutes of device time buy ~100 prompts; the next GPU run should",
        "batch prompts (several per forward) before training longer. Timeline of the run:",
        "",
        "```",
        *[line for line in progress if line.startswith("[") and "] eval-" not in line],
        "```",
    ]


DEV_SELECTION = ROOT / "docs" / "results" / "dev-selection-smollm2-top100.json"  # bench/results_runs.sh dev_choice


def summary_of(name: str) -> Optional[dict]:
    """A committed harness summary (`docs/results/<name>.json`), or None when that run has not finished."""
    path = ROOT / "docs" / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fusion_section() -> list[str]:
    """Fusion with the first stage's order: the weight chosen on dev data, then the reporting runs at that weight."""
    if not DEV_SELECTION.exists():
        return ["## Fusion with the first stage's order", "", "Not measured yet (bench/results_runs.sh dev_choice)."]
    selection = json.loads(DEV_SELECTION.read_text())
    fusion = selection["fusion"]
    weight = fusion["input_order_weight"]
    fold = fusion["two_fold"]
    counts = ", ".join(f"{k} {v}" for k, v in selection["num_dev_queries"].items())
    per_weight = fusion["dev_ndcg@10_per_weight"]
    lines = [
        "## Fusion with the first stage's order (`input_order_weight`, measured)",
        "",
        "Generated by `python bench/make_training_report.py` from `docs/results/dev-selection-smollm2-top100.json`",
        "(`blockrank select-heads`, phase `dev_choice` of bench/results_runs.sh) and the harness summaries of phase",
        "`fusion`. The shipped model's ranking is fused with BM25's by reciprocal ranks, "
        "(1 - w) / (60 + model rank) + w / (60 + BM25 rank); w is chosen on dev data only "
        f"({counts} queries{'' if selection.get('complete') else ', a partial collection'}), each dataset's mean "
        "nDCG@10 averaged:",
        "",
        "| w (weight of BM25's order) | " + " | ".join(per_weight) + " |",
        "|---|" + "---|" * len(per_weight),
        "| dev nDCG@10 | " + " | ".join(f"{v:.4f}" for v in per_weight.values()) + " |",
        "",
        f"Chosen: w = {weight}. Two-fold check (choose on one half of the dev queries, measure on the other, both "
        f"ways): chosen {fold['held_out_chosen']:.4f}, model alone {fold['held_out_model_alone']:.4f}, BM25 alone "
        f"{fold['held_out_first_stage']:.4f}.",
        "",
        "On the reporting splits, at that weight (not chosen there), by `blockrank eval --input-order-weight "
        f"{weight}`, on the CPU:",
        "",
        "| dataset | depth | queries | model alone | fused | BM25 | bi-encoder (all-MiniLM-L6-v2) |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for dataset in ("dl19", "scifact"):
        fused = summary_of(f"{dataset}-trained-fused-top100")
        alone = summary_of(f"{dataset}-trained-top100")
        biencoder = summary_of(f"{dataset}-biencoder-top100")
        if fused is None:
            lines.append(f"| {dataset} | 100 | | {alone['metrics']['nDCG@10']:.4f} | not run yet | | |")
            continue
        bm25 = fused["first_stage_metrics"]["nDCG@10"]
        value = fused["metrics"]["nDCG@10"]
        lines.append(
            f"| {dataset} | {fused['depth']} | {fused['num_queries']} | {alone['metrics']['nDCG@10']:.4f} | "
            f"**{value:.4f}** | {bm25:.4f} | {biencoder['metrics']['nDCG@10']:.4f} |"
        )
        verdicts.append(f"{dataset} {'above' if value > bm25 else 'not above'} BM25 ({value - bm25:+.4f})")
    if verdicts:
        lines += ["", "Fused against BM25: " + "; ".join(verdicts) + "."]
    lines += [
        "",
        "Fusion is an option, not the default: it assumes the candidates arrive best first from a first stage, "
        "which holds for the harness and for retrievers feeding the adapters but not for an arbitrary list.",
    ]
    below = [
        dataset
        for dataset in ("dl19", "scifact")
        if (alone := summary_of(f"{dataset}-trained-top100"))
        and alone["metrics"]["nDCG@10"] <= alone["first_stage_metrics"]["nDCG@10"]
    ]
    if below:
        lines.append(f"The model alone stays at or below BM25 at top-100 on {', '.join(below)}.")
    return lines


def main() -> None:
    record = json.loads((ADAPTER / "blockrank.json").read_text())
    training = record["training"]
    log = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]
    plot_losses(log, ROOT / "docs" / "training_losses.png")
    size = sum(p.stat().st_size for p in ADAPTER.iterdir())
    stop = "max_steps reached" if training["steps_done"] >= training["total_steps"] else "max_minutes reached"
    body = [
        "## The shipped model: how it was made (measured)",
        "",
        "Generated by `python bench/make_training_report.py` from the adapter's `blockrank.json`, its training log and",
        "the harness summaries in `docs/results/`.",
        "",
        "Command (reconstructed field by field from the recorded configuration):",
        "",
        "```bash",
        command(training),
        "```",
        "",
        (
            f"- Base model: `{record['base_model']}`; LoRA rank {training['lora_rank']} "
            f"(alpha {training['lora_alpha']}) on every projection of"
        ),
        f"  layers 0..{record['settings']['scoring_layer']} (L* = {record['settings']['scoring_layer']}); "
        "adapter files "
        f"{size / 1e6:.1f} MB ({training['save_dtype']}), in `blockrank_rerank/models/smollm2-135m-blockrank/`.",
        f"- Data: {training['examples']:,} training queries from {', '.join(training['sources'])}; "
        f"{training['num_candidates']} candidates per prompt, blocks of {training['max_block_tokens']} tokens.",
        f"- Run: {training['steps_done']} optimizer steps x {training['prompts_per_step']} prompts = "
        f"{training['prompts_seen']:,} prompts "
        f"({training['prompts_seen'] / training['examples']:.2f} epoch), "
        f"{training['seconds']:.0f} s on `{training['device']}` "
        f"(torch {training['torch']}, {training['forward']} forward, {training['dtype']}); stopped because {stop}.",
        f"- Rate: {training['prompts_seen'] / training['seconds']:.1f} prompts/s; "
        f"one full epoch of the {training['examples']:,} queries "
        f"would take ~{training['examples'] * training['seconds'] / training['prompts_seen'] / 60:.0f} min "
        "at this rate.",
        f"- λ = {training['aux_weight']}, τ = {training['temperature']}, lr {training['learning_rate']} "
        f"(warm-up {training['warmup_steps']} steps, "
        "cosine to 10%), AdamW, seed " + str(training["seed"]) + ".",
        "",
        "Losses (means over blocks of 100 optimizer steps):",
        "",
        *loss_table(log, training["prompts_per_step"]),
        "",
        "![training losses](training_losses.png)",
        "",
        "### Quality, measured by the evaluation harness (`blockrank eval`)",
        "",
        *quality_tables(load_summaries()),
    ]
    write_section("training", "\n".join(body), REPORT)
    write_section("issue17-h200", "\n".join(issue17_section()), REPORT)
    write_section("fusion", "\n".join(fusion_section()), REPORT)
    print(f"wrote the training section of {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

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
ROWS = {"first-stage": "BM25 (first stage)", "blockrank": "untrained SmolLM2-135M-Instruct, BlockRank scoring",
        "blockrank-trained": "**trained: SmolLM2-135M-Instruct + our BlockRank LoRA**"}


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
        lines.append(f"| {chunk[0]['step']}–{chunk[-1]['step']} | {chunk[-1]['step'] * prompts_per_step} | "
                     f"{statistics.fmean(r['ntp'] for r in chunk):.3f} | {statistics.fmean(r['aux'] for r in chunk):.3f} |")
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
        out += [f"### {dataset}, BM25 top-{depth}, {len(qids)} queries", "",
                "| model | " + " | ".join(names) + " | s/query |", "|" + "---|" * (len(names) + 2)]
        bm25 = current["first_stage_metrics"]
        out.append(f"| {ROWS['first-stage']} | " + " | ".join(f"{bm25[n]:.4f}" for n in names) + " | — |")
        for method in ("blockrank", "blockrank-trained"):
            if method not in rows:
                out.append(f"| {ROWS[method]} | " + " | ".join("not run" for _ in names) + " | — |")
            for s in sorted(rows.get(method, []), key=block_settings):
                out.append(f"| {ROWS[method]}; {block_settings(s)} | " + " | ".join(f"{s['metrics'][n]:.4f}" for n in names)
                           + f" | {s['seconds_per_query']['mean']:.2f}{devices_note(s)} |")
        trained = current["metrics"]["nDCG@10"]
        verdict = "beats" if trained > bm25["nDCG@10"] else "does not beat"
        if shipped and depth == 100:
            verdicts.append(f"{dataset} top-100 ({len(qids)} queries): {trained:.4f} vs BM25 {bm25['nDCG@10']:.4f}, {verdict}")
        where = f"At its shipped settings ({block_settings(current)})" if shipped else \
            f"Not yet measured at its shipped settings; at {block_settings(current)}"
        out += ["", f"{where} the trained model {verdict} BM25 here (nDCG@10 {trained:.4f} vs {bm25['nDCG@10']:.4f}).", ""]
    target = ["**Our target for this model, beating BM25 on DL19 top-100 and SciFact test top-100, at its shipped settings "
              "(nDCG@10):**", "", *[f"- {v}" for v in verdicts or ["not yet measured at the shipped settings"]], ""]
    return target + out


def current_trained(summaries: list[dict]) -> Optional[dict]:
    """The trained model's summary at the settings the shipped checkpoint records, if one was measured."""
    settings = json.loads((ADAPTER / "blockrank.json").read_text())["settings"]
    for s in summaries:
        if all(s.get("settings", {}).get(k) == settings.get(k) for k in ("max_block_tokens", "query_position_offset")):
            return s
    return None


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
        f"- Base model: `{record['base_model']}`; LoRA rank {training['lora_rank']} (alpha {training['lora_alpha']}) on every projection of",
        f"  layers 0..{record['settings']['scoring_layer']} (L* = {record['settings']['scoring_layer']}); adapter files "
        f"{size / 1e6:.1f} MB ({training['save_dtype']}), in `blockrank_rerank/models/smollm2-135m-blockrank/`.",
        f"- Data: {training['examples']:,} training queries from {', '.join(training['sources'])}; "
        f"{training['num_candidates']} candidates per prompt, blocks of {training['max_block_tokens']} tokens.",
        f"- Run: {training['steps_done']} optimizer steps x {training['prompts_per_step']} prompts = {training['prompts_seen']:,} prompts "
        f"({training['prompts_seen'] / training['examples']:.2f} epoch), {training['seconds']:.0f} s on `{training['device']}` "
        f"(torch {training['torch']}, {training['forward']} forward, {training['dtype']}); stopped because {stop}.",
        f"- Rate: {training['prompts_seen'] / training['seconds']:.1f} prompts/s; one full epoch of the {training['examples']:,} queries "
        f"would take ~{training['examples'] * training['seconds'] / training['prompts_seen'] / 60:.0f} min at this rate.",
        f"- λ = {training['aux_weight']}, τ = {training['temperature']}, lr {training['learning_rate']} (warm-up {training['warmup_steps']} steps, "
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
    print(f"wrote the training section of {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

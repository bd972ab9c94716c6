"""Calibrated relevance scores (issue 19): collect relevance logits, fit the calibration on dev, report on DL19.

    python bench/relevance.py collect --dataset dl21 --queries 30 --sizes 100 --run-dir runs/relevance
    python bench/relevance.py fit --run-dir runs/relevance            # DL21 (dev) only: calibration + threshold
    python bench/relevance.py collect --dataset dl19 --sizes 5,20,50,100 --run-dir runs/relevance
    python bench/relevance.py report --run-dir runs/relevance         # DL19: stability and precision/recall

`collect` reads, per query and list size N (the first N BM25 candidates), every document's share and raw relevance
logit (`scoring.relevance_logits`) with the shipped model, one JSON per query (resumable, `--max-minutes`).
`fit` chooses relevance_calibration = (slope, intercept) by logistic regression of judged relevance on the logit
(DL21 top-100, judged documents), and the threshold maximising F1 there; it writes them into the shipped
checkpoint's blockrank.json and docs/results/relevance-calibration-dl21.json. `report` applies both, unchanged,
to DL19: how far a fixed document's relevance score and share move across N, and the threshold's precision and
recall; docs/results/relevance-dl19.json (rendered into docs/results.md by bench/make_results.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
CHECKPOINT = ROOT / "blockrank_rerank" / "models" / "smollm2-135m-blockrank" / "blockrank.json"
RELEVANT_GRADE = 2  # TREC DL: grade >= 2 counts relevant (the harness's binary threshold for DL)
FIXED_DOCUMENTS = 5  # the first BM25 candidates, present in every list size, whose scores are followed across N


def cpu_name() -> str:
    """The CPU model, for the record."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def collect(args: argparse.Namespace) -> None:
    """Shares and raw relevance logits per query and list size, one JSON file per query under the run dir."""
    from blockrank_rerank import BlockRank
    from blockrank_rerank.evaluation.data import load_trec_dl

    if args.dataset not in ("dl19", "dl21"):
        raise SystemExit("--dataset must be dl19 or dl21")
    sizes = [int(n) for n in args.sizes.split(",")]
    run = load_trec_dl(args.dataset)
    qids = sorted(q for q in run.candidates if q in run.qrels)
    if args.queries is not None:
        qids = sorted(random.Random(args.seed).sample(qids, min(args.queries, len(qids))))
    out = Path(args.run_dir) / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    engine = BlockRank.from_pretrained().engine
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
    for number, qid in enumerate(qids):
        path = out / f"{qid}.json"
        if path.exists():
            continue
        if deadline is not None and time.monotonic() > deadline:
            print(f"stopped after --max-minutes; {number} of {len(qids)} queries done (rerun to resume)")
            return
        candidates = run.candidates[qid]
        record = {"qid": qid, "docids": [c.docid for c in candidates[: max(sizes)]], "sizes": {}}
        for size in sizes:
            readings = engine.read_layout(engine.layout(run.queries[qid], [c.text for c in candidates[:size]]))
            record["sizes"][str(size)] = {
                "shares": readings.shares.tolist(),
                "logits": readings.relevance_logits.tolist(),
            }
        record["grades"] = [run.qrels[qid].get(d) for d in record["docids"]]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
        print(f"{args.dataset} {qid} ({number + 1}/{len(qids)})", flush=True)


def load(run_dir: str, dataset: str) -> list[dict]:
    records = [json.loads(p.read_text()) for p in sorted((Path(run_dir) / dataset).glob("*.json"))]
    if not records:
        raise SystemExit(f"no collected queries in {run_dir}/{dataset}: run `collect` first")
    return records


def judged_pairs(records: list[dict], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance logits and binary labels of the judged documents of every list of `size`. Shapes: (M,), (M,)."""
    logits, labels = [], []
    for record in records:
        for logit, grade in zip(record["sizes"][str(size)]["logits"], record["grades"]):
            if grade is not None:
                logits.append(logit)
                labels.append(float(grade >= RELEVANT_GRADE))
    return torch.tensor(logits, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)


def fit_logistic(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(slope, intercept) maximising the Bernoulli likelihood of y under sigmoid(slope * x + intercept)."""
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([params], max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        loss.backward()
        return loss

    optimiser.step(closure)
    slope, intercept = params.detach().tolist()
    return slope, intercept


def precision_recall(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict[str, float]:
    kept = scores >= threshold
    true_positives = float((kept & (labels > 0)).sum())
    precision = true_positives / max(1, int(kept.sum()))
    recall = true_positives / max(1, int((labels > 0).sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    relevant = int((labels > 0).sum())
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "kept": int(kept.sum()),
        "judged": len(labels),
        "relevant": relevant,
        "precision_keeping_all": relevant / max(1, len(labels)),
    }


def fit(args: argparse.Namespace) -> None:
    """Calibration and threshold from DL21 top-100 (dev), written into the shipped checkpoint and docs/results."""
    records = load(args.run_dir, "dl21")
    x, y = judged_pairs(records, 100)
    slope, intercept = fit_logistic(x, y)
    scores = torch.sigmoid(slope * x + intercept)
    candidates = sorted({round(float(s), 3) for s in scores})
    threshold = max(candidates, key=lambda t: (precision_recall(scores, y, t)["f1"], -t))
    summary = {
        "dataset": "dl21",
        "depth": 100,
        "queries": len(records),
        "relevant_grade": RELEVANT_GRADE,
        "relevance_calibration": [slope, intercept],
        "threshold": threshold,
        "threshold_rule": "maximum F1 over judged documents",
        "dev": precision_recall(scores, y, threshold),
        "cpu": cpu_name(),
        "command": "python bench/relevance.py fit --run-dir RUN_DIR",
    }
    RESULTS.joinpath("relevance-calibration-dl21.json").write_text(json.dumps(summary, indent=2) + "\n")
    checkpoint = json.loads(CHECKPOINT.read_text())
    checkpoint["settings"]["relevance_calibration"] = [slope, intercept]
    CHECKPOINT.write_text(json.dumps(checkpoint, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def report(args: argparse.Namespace) -> None:
    """DL19: stability of a fixed document's relevance score vs its share across N, and the dev threshold's P/R."""
    calibration = json.loads(RESULTS.joinpath("relevance-calibration-dl21.json").read_text())
    slope, intercept = calibration["relevance_calibration"]
    threshold = calibration["threshold"]
    records = load(args.run_dir, "dl19")
    sizes = sorted(int(n) for n in records[0]["sizes"])
    spreads, ratios = [], []
    for record in records:
        for document in range(FIXED_DOCUMENTS):
            shares = [record["sizes"][str(n)]["shares"][document] for n in sizes]
            relevance = [
                float(torch.sigmoid(torch.tensor(slope * record["sizes"][str(n)]["logits"][document] + intercept)))
                for n in sizes
            ]
            spreads.append(max(relevance) - min(relevance))
            ratios.append(max(shares) / min(shares))
    x, y = judged_pairs(records, max(sizes))
    scores = torch.sigmoid(slope * x + intercept)
    summary = {
        "dataset": "dl19",
        "queries": len(records),
        "sizes": sizes,
        "fixed_documents_per_query": FIXED_DOCUMENTS,
        "median_relevance_spread": statistics.median(spreads),
        "p90_relevance_spread": sorted(spreads)[int(0.9 * (len(spreads) - 1))],
        "median_share_ratio": statistics.median(ratios),
        "threshold": threshold,
        "relevance_calibration": [slope, intercept],
        "at_threshold": precision_recall(scores, y, threshold),
        "relevant_grade": RELEVANT_GRADE,
        "cpu": cpu_name(),
        "command": "python bench/relevance.py report --run-dir RUN_DIR",
    }
    RESULTS.joinpath("relevance-dl19.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gather = commands.add_parser("collect")
    gather.add_argument("--dataset", required=True)
    gather.add_argument("--queries", type=int, default=None)
    gather.add_argument("--seed", type=int, default=0)
    gather.add_argument("--sizes", default="100")
    gather.add_argument("--max-minutes", type=float, default=None)
    for command in (gather, commands.add_parser("fit"), commands.add_parser("report")):
        command.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    {"collect": collect, "fit": fit, "report": report}[args.command](args)


if __name__ == "__main__":
    main()

"""Queries/s of `blockrank batch-rerank` on this machine: the local engine beside Ray Data with 1 and 2 workers.

Each configuration runs the real command in its own process (the Ray ones start their own local Ray instance,
as a user's would) over the same DL19 queries and BM25 depth, into a fresh output directory; the figures come
from the job's summary.json and the process's wall clock. Outputs are checked to be the same across configurations.
Ray adds no compute on a 2-core machine: what is measured is that the same command (which scales out on a cluster,
docs/scale-out.md) gives the same output, and what Ray's fixed costs are.
Usage: python bench/batch_scale.py [--queries 8] [--depth 20] [--rounds 2]   (writes the "batch-scale" section;
       --render rewrites it from docs/results/batch-scale.json without running)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

CONFIGS = {  # name -> extra arguments of `blockrank batch-rerank`
    "local (1 process, 2 torch threads)": ["--engine", "local"],
    "ray, 1 worker x 2 CPUs": ["--engine", "ray", "--workers", "1", "--cpus-per-worker", "2"],
    "ray, 2 workers x 1 CPU": ["--engine", "ray", "--workers", "2", "--cpus-per-worker", "1"],
}


def cpu_model() -> str:
    """`lscpu`'s model name (the /proc/cpuinfo one where lscpu is missing)."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")


def run_config(arguments: list[str], queries: int, depth: int, shard_size: int, output: Path) -> dict:
    """One `batch-rerank` command in a fresh process; its summary.json with the process wall time added."""
    command = [
        sys.executable, "-m", "blockrank_rerank.cli", "batch-rerank", "--dataset", "dl19", "--queries", str(queries),
        "--depth", str(depth), "--shard-size", str(shard_size), "--output", str(output), "--no-progress", *arguments,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = json.loads((output / "summary.json").read_text())
    summary["process_seconds"] = time.perf_counter() - start
    return summary


def rankings(output: Path) -> list[tuple[str, list[str], list[float]]]:
    """(qid, docids, scores) per query of a job's results.jsonl."""
    with open(output / "results.jsonl", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    return [(r["qid"], [d["id"] for d in r["ranking"]], [d["score"] for d in r["ranking"]]) for r in records]


RAW = Path(__file__).resolve().parents[1] / "docs" / "results" / "batch-scale.json"


def measure(args: argparse.Namespace) -> dict:
    """Every configuration `args.rounds` times, interleaved (ABCABC...): raw summaries, and whether outputs agree."""
    load_before = os.getloadavg()[0]  # other work on the machine shows here
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    outputs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(args.rounds):
            for number, (name, arguments) in enumerate(CONFIGS.items()):
                output = Path(scratch) / f"run{round_number}-{number}"
                summary = run_config(arguments, args.queries, args.depth, args.shard_size, output)
                summary["load_after"] = os.getloadavg()[0]
                runs[name].append(summary)
                outputs[name] = rankings(output)
                print(f"round {round_number}: {name}: job {summary['wall_seconds']:.1f} s", flush=True)
    reference = next(iter(outputs.values()))
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "queries": args.queries,
        "depth": args.depth,
        "shard_size": args.shard_size,
        "rounds": args.rounds,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "runs": runs,
        "same_rankings": all(
            [(q, ids) for q, ids, _ in found] == [(q, ids) for q, ids, _ in reference] for found in outputs.values()
        ),
        "max_score_difference": max(
            abs(a - b)
            for found in outputs.values()
            for (_, _, mine), (_, _, theirs) in zip(found, reference)
            for a, b in zip(mine, theirs)
        ),
    }


def fixed_cost(summary: dict) -> float:
    """Seconds of a job not spent scoring on its busiest worker: Ray and actor start, model loads, writing."""
    return summary["wall_seconds"] - max(w["seconds"] for w in summary["per_worker"].values())


def render(raw: dict) -> str:
    """The markdown section from the raw measurements: the fastest run of each configuration, and what it shows."""
    rows, best = [], {}
    for name, summaries in raw["runs"].items():
        best[name] = fastest = min(summaries, key=lambda s: s["wall_seconds"])
        workers = fastest["per_worker"].values()
        rows.append(
            f"| {name} | {fastest['process_seconds']:.1f} | {fastest['wall_seconds']:.1f} | "
            f"{fastest['queries_per_second']:.3f} | "
            + ", ".join(f"{w['queries']} q at {w['queries_per_second']:.3f}" for w in workers)
            + " | "
            + ", ".join(f"{s['wall_seconds']:.0f}" for s in summaries)
            + f" | {fixed_cost(fastest):.1f} |"
        )
    local, *ray_names = list(best)
    fastest_ray = min(ray_names, key=lambda name: best[name]["wall_seconds"])
    ratio = best[local]["wall_seconds"] / best[fastest_ray]["wall_seconds"]
    if ratio > 1:
        reading = (
            f"Here the fastest Ray row ({fastest_ray}) finished {ratio:.1f}x sooner than the local engine. That is "
            "not compute Ray adds (two cores are two cores): the machine was shared with other jobs, and under that "
            "contention the local process's 2-thread forwards ran far slower than on a quiet machine (the fp32 "
            "column of the CPU precision table above, N=20), while Ray's workers (each with an explicit torch "
            "thread count, at nice 15) fared better; we did not isolate the cause. Read the rows as: the same "
            "command gives the same output on either engine, and Ray costs a fixed "
            f"{fixed_cost(best[fastest_ray]) - fixed_cost(best[local]):.0f} s more per job (its start and the actors')."
        )
    else:
        reading = (
            f"The local engine was {1 / ratio:.1f}x as fast as the fastest Ray row ({fastest_ray}): on two cores Ray "
            "can only add overhead (its own processes, one model load per actor, the cores split between actors): "
            f"a fixed {fixed_cost(best[fastest_ray]) - fixed_cost(best[local]):.0f} s more per job here."
        )
    body = [
        "## Batch reranking: local engine and Ray Data workers on this machine",
        "",
        f"Measured by `bench/batch_scale.py` on **{raw['cpu']}**, {raw['cores']} cores, torch {raw['torch']}, "
        f"embedded default model (fp32), `blockrank batch-rerank --dataset dl19 --queries {raw['queries']} "
        f"--depth {raw['depth']} --shard-size {raw['shard_size']}`. Each configuration ran {raw['rounds']} times in "
        "its own process, interleaved with the others; the row is its fastest run, the last column every run's job "
        f"seconds (raw: `docs/results/batch-scale.json`). Load average {raw['load_before']:.1f} before, "
        f"{raw['load_after']:.1f} after, on 2 cores: other jobs shared the CPU, so every time is inflated and varies "
        "between runs. *Command s*: the whole process (imports, Ray start, model loads, scoring, writing); *job s*: "
        "from the engine's start (Ray start and model loads included) to the last shard written; *per worker*: "
        "queries and queries/s of scoring time only; *fixed s*: job s minus the slowest worker's scoring time "
        "(Ray start, actor start, model loads).",
        "",
        "| configuration | command s | job s | queries/s (job) | per worker: queries at queries/s (scoring) | "
        "job s, every run | fixed s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Outputs: {'the same ranking in every configuration' if raw['same_rankings'] else 'RANKINGS DIFFER'}, "
        f"largest score difference {raw['max_score_difference']:.1e}. {reading} Scale-out needs more machines: "
        "[scale-out.md](scale-out.md).",
    ]
    return "\n".join(body)


def main() -> None:
    """Measure (or, with --render, reuse the raw JSON) and write the "batch-scale" section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=8, help="first DL19 queries by qid")
    parser.add_argument("--depth", type=int, default=20, help="BM25 candidates per query")
    parser.add_argument("--shard-size", type=int, default=1, help="queries per shard (the unit a worker takes)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each configuration, interleaved")
    parser.add_argument("--render", action="store_true", help="rewrite the section from the raw JSON, no runs")
    args = parser.parse_args()
    if args.render:
        raw = json.loads(RAW.read_text())
    else:
        raw = measure(args)
        RAW.parent.mkdir(parents=True, exist_ok=True)
        RAW.write_text(json.dumps(raw, indent=2) + "\n")
    section = render(raw)
    write_section("batch-scale", section)
    print(section)


if __name__ == "__main__":
    main()

"""`blockrank batch-rerank`: the command-line arguments turned into a batch job, and its summary printed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..inputs import check_top_k
from .inputs import dataset_queries, read_jsonl_queries
from .job import run_batch
from .local import LocalEngine


def run_command(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """Run the job the arguments describe; the summary goes to stdout, the progress bar to stderr."""
    args.top_k = check_top_k(args.top_k, "--top-k")
    engine: Any
    if args.engine == "ray":
        from .ray_engine import RayEngine  # fails with the extra's name when Ray is absent, before any work

        engine = RayEngine(
            args.model,
            overrides,
            args.top_k,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            gpus_per_worker=args.num_gpus_per_worker,
            address=args.ray_address,
        )
    else:
        if args.workers != 1 or args.num_gpus_per_worker or args.ray_address:
            raise ValueError("--workers, --num-gpus-per-worker and --ray-address need --engine ray")
        engine = LocalEngine(args.model, overrides, args.top_k)
    if args.input is not None:
        if args.depth is not None or args.queries is not None:
            raise ValueError("--depth and --queries apply to --dataset; an --input file is reranked as it is")
        queries = read_jsonl_queries(Path(args.input))
    else:
        queries = dataset_queries(args.dataset, 100 if args.depth is None else args.depth, args.queries)
    if not queries:
        print(f"blockrank: warning: no queries in {args.input or args.dataset}: nothing to rerank", file=sys.stderr)
        return 0
    summary = run_batch(
        queries,
        Path(args.output),
        engine,
        model=args.model,
        overrides=overrides,
        top_k=args.top_k,
        shard_size=args.shard_size,
        max_shards=args.max_shards,
        show_progress=not args.no_progress,
    )
    print("\n".join(summary.lines()))
    where = f"{Path(args.output) / 'results.jsonl'} and {Path(args.output) / 'run.trec'}"
    print(f"wrote {where}" if summary.complete else f"shards in {Path(args.output) / 'shards'}")
    return 0

"""A batch job from queries to output files: plan shards, skip finished ones, run an engine, write, merge, summarise."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from tqdm.auto import tqdm

from ..inputs import check_top_k
from .inputs import BatchQuery, fingerprint
from .records import ShardResult
from .shards import OutputDirectory, Shard, plan_shards

logger = logging.getLogger(__name__)
DEFAULT_SHARD_SIZE = 16  # the CLI's --shard-size default
ENGINES = ("local", "ray")


class Engine(Protocol):
    """What the job needs of an engine: its name, its worker count, and results for the shards it is given."""

    name: str
    workers: int

    def run(self, shards: Sequence[Shard]) -> Any: ...  # an iterator of ShardResult


@dataclass
class WorkerStats:
    """What one worker did in this run: queries, candidates and seconds spent scoring (model load excluded)."""

    queries: int = 0
    documents: int = 0
    seconds: float = 0.0

    @property
    def queries_per_second(self) -> float:
        """Queries per second of scoring time."""
        return self.queries / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BatchSummary:
    """The outcome of one run of a job: what was done now, what was already there, and how fast."""

    engine: str
    workers: int
    total_queries: int
    total_shards: int
    skipped_shards: int  # complete before this run started
    queries: int = 0  # reranked in this run
    documents: int = 0
    shards: int = 0
    wall_seconds: float = 0.0  # from engine start (model loads included) to the last shard written
    complete: bool = False
    per_worker: dict[str, WorkerStats] = field(default_factory=dict)

    @property
    def queries_per_second(self) -> float:
        """Queries reranked in this run per second of wall time."""
        return self.queries / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def add(self, result: ShardResult) -> None:
        """Count a finished shard."""
        stats = self.per_worker.setdefault(result.worker, WorkerStats())
        for target in (self, stats):
            target.queries += len(result.records)
            target.documents += result.documents
        stats.seconds += result.seconds
        self.shards += 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (summary.json)."""
        data = asdict(self)
        data["queries_per_second"] = self.queries_per_second
        for name, stats in self.per_worker.items():
            data["per_worker"][name]["queries_per_second"] = stats.queries_per_second
        return data

    def lines(self) -> list[str]:
        """The human-readable summary, one fact per line."""
        state = "complete" if self.complete else "partial: rerun the same command to continue"
        out = [
            f"{self.queries} queries, {self.documents} documents reranked in {self.wall_seconds:.1f} s "
            f"({self.queries_per_second:.2f} queries/s) with engine {self.engine}, {self.workers} worker(s); "
            f"{self.shards} of {self.total_shards} shards written now, {self.skipped_shards} already done ({state})"
        ]
        for name, stats in sorted(self.per_worker.items()):
            out.append(
                f"  worker {name}: {stats.queries} queries, {stats.documents} documents, {stats.seconds:.1f} s "
                f"scoring, {stats.queries_per_second:.2f} queries/s"
            )
        return out


def run_batch(
    queries: Sequence[BatchQuery],
    output: Path,
    engine: Engine,
    *,
    model: Optional[str] = None,
    overrides: Optional[dict[str, Any]] = None,
    top_k: Optional[int] = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_shards: Optional[int] = None,
    show_progress: bool = True,
) -> BatchSummary:
    """Rerank `queries` into `output` (see `shards` for the layout), resuming where an earlier run stopped.

    `model`, `overrides` and `top_k` must be what `engine` runs with: they go into the manifest that a rerun
    is checked against. `max_shards` stops after that many new shards (rerun to continue). Results are merged
    into results.jsonl and run.trec once every shard is complete.
    """
    top_k = check_top_k(top_k)
    if max_shards is not None and (isinstance(max_shards, bool) or not isinstance(max_shards, int) or max_shards < 1):
        raise ValueError(f"max_shards must be None or an int >= 1, got {max_shards!r}")
    shards = plan_shards(queries, shard_size)
    directory = OutputDirectory(output)
    directory.prepare(
        {
            "input_sha256": fingerprint(queries),
            "num_queries": len(queries),
            "shard_size": shard_size,
            "model": model,
            "config_overrides": dict(sorted((overrides or {}).items())),
            "top_k": top_k,
        }
    )
    done = [shard for shard in shards if directory.is_complete(shard)]
    done_indices = {shard.index for shard in done}
    pending = [shard for shard in shards if shard.index not in done_indices][:max_shards]
    summary = BatchSummary(engine.name, engine.workers, len(queries), len(shards), len(done))
    by_index = {shard.index: shard for shard in pending}
    start = time.perf_counter()
    if pending:
        bar = tqdm(
            total=len(queries),
            initial=sum(len(shard.queries) for shard in done),
            desc=f"batch-rerank ({engine.name})",
            unit="query",
            disable=not show_progress,
        )
        with bar:
            for result in engine.run(pending):
                shard = by_index.pop(result.shard, None)
                if shard is None:
                    raise RuntimeError(f"the engine returned shard {result.shard}, which was not pending")
                directory.write_shard(shard, result)
                summary.add(result)
                bar.update(len(result.records))
        if by_index:
            raise RuntimeError(f"the engine finished without shards {sorted(by_index)}; rerun to redo them")
    summary.wall_seconds = time.perf_counter() - start
    summary.complete = len(done) + summary.shards == len(shards)
    if summary.complete:
        directory.merge(shards)
    directory.write_summary(summary.to_dict())
    return summary

"""The Ray Data engine: shards -> `map_batches` over a fixed pool of model actors -> results back to the driver.

Each actor (`RankerActor`) loads the model once and reranks one shard per call with the same code as the local
engine (`records.rerank_shard`). The driver keeps the writing (shard files, merge), so the output directory
only has to exist where the driver runs. Connects to a running cluster (`address`) or starts a local instance.
Ray is the optional extra `[ray]`; nothing outside `blockrank_rerank.batch` imports it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .inputs import BatchQuery
from .records import ShardResult, rerank_shard, worker_name
from .shards import Shard

logger = logging.getLogger(__name__)
RAY_EXTRA = 'pip install "blockrank-rerank[ray]"'


def require_ray() -> None:
    """ImportError naming the extra when Ray Data cannot be imported."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError(f"--engine ray needs Ray Data ({error}); install it with {RAY_EXTRA}") from None


class RankerActor:
    """A Ray Data callable class: loads the model once per actor, then reranks one shard per call."""

    def __init__(
        self, model: Optional[str], overrides: dict[str, Any], top_k: Optional[int], threads: Optional[int]
    ) -> None:
        import torch

        from ..reranker import BlockRank

        if threads:
            torch.set_num_threads(threads)  # the CPUs Ray reserved for this actor, not the whole machine's
        self.ranker = BlockRank.from_pretrained(model, **overrides)
        self.top_k, self.worker = top_k, worker_name()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rerank the shards of a batch (one with batch_size=1); results as JSON strings with worker and timing."""
        results = [
            rerank_shard(
                self.ranker, int(shard), [BatchQuery.from_json(q) for q in json.loads(payload)], self.top_k, self.worker
            )
            for shard, payload in zip(batch["shard"], batch["payload"])
        ]
        return {
            "shard": np.array([r.shard for r in results], dtype=np.int64),
            "records": np.array([json.dumps(list(r.records)) for r in results], dtype=object),
            "worker": np.array([r.worker for r in results], dtype=object),
            "seconds": np.array([r.seconds for r in results], dtype=np.float64),
        }


class RayEngine:
    """Reranks shards on `workers` Ray actors of `cpus_per_worker` CPUs and `gpus_per_worker` GPUs each."""

    name = "ray"

    def __init__(
        self,
        model: Optional[str] = None,
        overrides: Optional[dict[str, Any]] = None,
        top_k: Optional[int] = None,
        *,
        workers: int = 1,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        address: Optional[str] = None,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if not cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker!r}")
        if not gpus_per_worker >= 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {gpus_per_worker!r}")
        require_ray()
        self.model, self.overrides, self.top_k = model, dict(overrides or {}), top_k
        self.workers, self.cpus_per_worker, self.gpus_per_worker = workers, cpus_per_worker, gpus_per_worker
        self.address = address

    def run(self, shards: Sequence[Shard]) -> Iterator[ShardResult]:
        """Each shard's result as soon as an actor finishes it (any order); Ray is shut down after if started here."""
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        try:
            self._check_resources(local=started and self.address is None)
            yield from self._results(shards)
        finally:
            if started:
                ray.shutdown()

    def _check_resources(self, local: bool) -> None:
        """ValueError when a local instance cannot hold the actor pool (it would wait forever); a warning on a
        cluster, whose autoscaler may still add nodes."""
        import ray

        have = ray.cluster_resources()
        for kind, per_worker in (("CPU", self.cpus_per_worker), ("GPU", self.gpus_per_worker)):
            need = self.workers * per_worker
            if need > have.get(kind, 0.0):
                message = (
                    f"{self.workers} workers x {per_worker:g} {kind}s need {need:g} {kind}s; the Ray cluster has "
                    f"{have.get(kind, 0.0):g} (lower --workers, --cpus-per-worker or --num-gpus-per-worker)"
                )
                if local:
                    raise ValueError(message)
                logger.warning("%s; waiting for the cluster to grow", message)

    def _results(self, shards: Sequence[Shard]) -> Iterator[ShardResult]:
        """The Ray Data pipeline: one block per shard, a fixed actor pool, rows streamed back to the driver."""
        import ray
        import ray.data
        import ray.exceptions

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the job's own bar counts queries across all workers
        if hasattr(context, "raise_original_map_exception"):
            context.raise_original_map_exception = True  # a ValueError in an actor stays a ValueError
        items = [{"shard": s.index, "payload": json.dumps([q.to_json() for q in s.queries])} for s in shards]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        ranked = dataset.map_batches(
            RankerActor,
            fn_constructor_kwargs={
                "model": self.model,
                "overrides": self.overrides,
                "top_k": self.top_k,
                "threads": max(1, int(self.cpus_per_worker)),
            },
            batch_size=1,  # one shard per call: a shard is the unit written, so it is also the unit scheduled
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.workers, max_tasks_in_flight_per_actor=1),
            num_cpus=self.cpus_per_worker,
            **({"num_gpus": self.gpus_per_worker} if self.gpus_per_worker else {}),
        )
        try:
            for row in ranked.iter_rows():
                records = tuple(json.loads(row["records"]))
                yield ShardResult(int(row["shard"]), records, str(row["worker"]), float(row["seconds"]))
        except ray.exceptions.RayTaskError as error:  # a shard failed in an actor: its own exception, not Ray's
            if isinstance(error.cause, Exception):
                raise error.cause from None
            raise
        except ray.exceptions.RayActorError as error:
            if not getattr(error, "actor_init_failed", False):
                raise
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = lines[-1] if lines else "unknown error"  # the original exception's last line
            raise OSError(f"a Ray worker could not load the model {self.model!r}: {reason}") from None

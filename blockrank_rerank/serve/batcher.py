"""Dynamic batching: requests wait in a bounded queue, are gathered into batches and run in one worker thread.

The event loop only enqueues and awaits; every forward runs in a single worker thread (one model, one forward
at a time, as `Engine.lock` also enforces). A batch is what is queued when the worker is free, topped up for at
most `wait_s` while it holds fewer than `max_batch_size` requests. It runs through one `BatchRunner` call,
`rerank_batch_runner` by default: one `BlockRank.rerank_batch` call, which packs the batch's prompts that fit
`max_pack_tokens` into one forward (multi-query packing).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from ..results import RankedList
from .metrics import Metrics

POLL_S = 0.001  # how often a gathering batch looks for newly queued requests

# (query, contents) pairs in, one RankedList (all documents, best first) or the exception of that pair out
BatchRunner = Callable[[Sequence[tuple[str, list[str]]]], list[Union[RankedList, Exception]]]


class QueueFullError(Exception):
    """The queue holds `max_queue` waiting requests (the caller answers 503 with Retry-After)."""


class ShuttingDownError(Exception):
    """The server is stopping and takes no new requests (503)."""


def rerank_batch_runner(ranker: Any) -> BatchRunner:
    """A runner over one `ranker.rerank_batch` call for the whole batch (packed where it fits); when a pair of the
    batch fails, each pair is run alone so that only the bad one fails."""

    def run(pairs: Sequence[tuple[str, list[str]]]) -> list[Union[RankedList, Exception]]:
        queries, contents = [query for query, _ in pairs], [docs for _, docs in pairs]
        try:
            return list(ranker.rerank_batch(queries, contents, show_progress_bar=False, batch_size=len(pairs)))
        except (ValueError, TypeError) as error:
            if len(pairs) == 1:
                return [error]
        results: list[Union[RankedList, Exception]] = []
        for query, docs in pairs:
            try:
                results.append(ranker.rerank(query, docs))
            except (ValueError, TypeError) as error:
                results.append(error)
        return results

    return run


@dataclass
class Job:
    """One queued request: what to rank and the future its handler awaits."""

    query: str
    contents: list[str]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """The bounded queue and the loop that drains it into batches for the worker thread."""

    def __init__(
        self,
        run: BatchRunner,
        *,
        max_queue: int,
        max_batch_size: int,
        wait_s: float,
        metrics: Optional[Metrics] = None,
    ) -> None:
        self.run = run
        self.max_queue = max_queue
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.metrics = metrics
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._closing = False

    async def start(self) -> None:
        """Create the queue, the worker thread and the gathering loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blockrank-forward")
        self._closing = False
        self._task = asyncio.create_task(self._loop(), name="blockrank-batcher")

    async def stop(self) -> None:
        """Refuse new requests, finish every queued one, then stop the loop and the worker thread."""
        if self._queue is None or self._task is None:
            return
        self._closing = True
        self._queue.put_nowait(None)  # after every queued job: the loop drains them first
        await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._queue = self._task = self._executor = None

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return self._queue.qsize() if self._queue is not None else 0

    def submit(self, query: str, contents: list[str]) -> asyncio.Future:
        """Queue a request; its future resolves to the RankedList. QueueFullError when `max_queue` wait already."""
        if self._queue is None or self._closing:
            raise ShuttingDownError("the server is shutting down")
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} requests are already waiting (max_queue={self.max_queue})")
        job = Job(query, contents, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        self._set_depth()
        return job.future

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.depth)

    async def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """`first` and what else is queued, topped up for `wait_s` while short of a full batch; True when the stop
        marker was taken."""
        assert self._queue is not None
        batch, deadline = [first], time.perf_counter() + self.wait_s
        while len(batch) < self.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if time.perf_counter() >= deadline:
                    break
                await asyncio.sleep(POLL_S)
                continue
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    async def _loop(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch, stop = await self._gather(first)
            self._set_depth()
            live = [job for job in batch if not job.future.done()]  # timed-out requests are skipped
            if live:
                await self._run(live)
            if stop:
                return

    async def _run(self, jobs: list[Job]) -> None:
        """Run `jobs` as one batch in the worker thread and resolve their futures on the event loop."""
        loop = asyncio.get_running_loop()
        pairs = [(job.query, job.contents) for job in jobs]
        start = time.perf_counter()
        try:
            results: list[Any] = await loop.run_in_executor(self._executor, self.run, pairs)
        except Exception as error:  # a bug in the runner: every request of the batch gets it (a 500)
            results = [error] * len(jobs)
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(jobs))
            self.metrics.forward_seconds.observe(time.perf_counter() - start)
        for job, result in zip(jobs, results):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

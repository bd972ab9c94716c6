"""Load test of `blockrank serve` on 127.0.0.1: requests/s, latency percentiles, errors and the server's peak RSS,
with batching and without, side by side, at concurrency 1, 8 and 32, N = 20 documents a request.

Two servers (the real `blockrank serve` command, the embedded default model, each in its own process) run at
once; every level runs against one, then the other, so that other load on the machine hits both alike. Requests
are Cohere v2 calls: DL19 queries with their BM25 top-20 passages (`../shared/data`), else the 20 documents of
the built-in corpus under each of its queries. Each level is bounded in count (`--requests`) and time: clients
send no new request after `--max-seconds`, the requests in flight then finish (so that a batch half done is not
counted against its mode), and any still unanswered `--drain-seconds` later are cancelled (their connections
close, the server drops their queued work) and reported as cut off, not as errors. Errors are any non-200 answer
or failed connection; with `--max-queue` at least the concurrency they must be 0. The CPU (lscpu's model name) and the
load average before and after are printed beside the table: other jobs on the machine inflate the times.
Usage: python bench/serve_load.py [--requests 500] [--max-seconds 60] [--concurrency 1 8 32]
Writes the "serve-load" section of docs/benchmarks.md and of docs/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVING_MD = ROOT / "docs" / "serving.md"
MODES = {  # name -> `blockrank serve` batching options
    "batching": ["--max-batch-size", "8", "--batch-wait-ms", "5"],
    "no batching": ["--max-batch-size", "1"],
}
N_DOCUMENTS = 20


def cpu_model() -> str:
    """lscpu's model name (else /proc/cpuinfo's), and the number of cores."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    return f"{name}, {os.cpu_count()} cores"


def workload() -> tuple[list[dict], str]:
    """Request bodies (query + 20 documents each) and where they come from."""
    try:
        from blockrank_rerank.evaluation.data import load_trec_dl

        run = load_trec_dl("dl19")
        pairs = [(run.queries[q], [c.text for c in run.candidates[q][:N_DOCUMENTS]]) for q in sorted(run.candidates)]
        pairs = [(query, docs) for query, docs in pairs if len(docs) == N_DOCUMENTS]
        source = f"DL19 queries with their BM25 top-{N_DOCUMENTS} passages ({len(pairs)} queries, cycled)"
    except (ImportError, OSError, ValueError):
        from blockrank_rerank.evaluation.demo_corpus import DEMO_QUERIES

        docs = [doc for q in DEMO_QUERIES for doc in q["documents"]][:N_DOCUMENTS]
        pairs = [(q["query"], docs) for q in DEMO_QUERIES]
        source = f"the built-in corpus: its {len(docs)} documents under each of its {len(pairs)} queries"
    bodies = [{"model": "blockrank", "query": query, "documents": docs, "top_n": 10} for query, docs in pairs]
    return bodies, source


class Server:
    """One `blockrank serve` process on a free loopback port."""

    def __init__(self, options: list[str], max_queue: int) -> None:
        command = [sys.executable, "-m", "blockrank_rerank.cli", "serve", "--port", "0", "--max-queue", str(max_queue)]
        command += ["--request-timeout", "3600", *options]
        self.process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.url = ""
        for line in self.process.stderr:
            match = re.search(r" on (http://127\.0\.0\.1:\d+) ", line)
            if match:
                self.url = match.group(1)
                break
        if not self.url:
            raise RuntimeError(f"blockrank serve did not start (exit status {self.process.wait()})")
        threading.Thread(target=self._drain, daemon=True).start()  # its later stderr must not fill the pipe
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("blockrank serve never answered /health")
            time.sleep(0.2)

    def _drain(self) -> None:
        for _ in self.process.stderr:
            pass

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        with open(f"/proc/{self.process.pid}/stat", encoding="utf-8") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far (the kernel's VmHWM)."""
        with open(f"/proc/{self.process.pid}/status", encoding="utf-8") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class Level:
    """What one concurrency level against one server measured."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cut_off: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the server's CPU time during the level
    load: float = 0.0  # 1-minute load average at the level's end

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_seconds / len(self.latencies) if self.latencies else float("nan")

    def percentile(self, q: float) -> float:
        """The q-th percentile latency of the completed requests (nearest rank)."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


async def run_level(
    server: Server, bodies: list[dict], concurrency: int, requests: int, max_seconds: float, drain_seconds: float
) -> Level:
    """`requests` calls from `concurrency` clients that each send one after another, none sent after `max_seconds`;
    those in flight then get `drain_seconds` to finish."""
    level, issued = Level(), [0]
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=server.url, timeout=None, limits=limits) as client:
        await client.post("/v2/rerank", json=bodies[0])  # warm-up, and waits out work left from the level before
        cpu_start = server.cpu_seconds()
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker() -> None:
            while issued[0] < requests and time.perf_counter() < deadline:
                body = bodies[issued[0] % len(bodies)]
                issued[0] += 1
                sent = time.perf_counter()
                try:
                    response = await client.post("/v2/rerank", json=body)
                    ok = response.status_code == 200 and len(response.json()["results"]) == 10
                except httpx.HTTPError:
                    ok = False
                if ok:
                    level.latencies.append(time.perf_counter() - sent)
                else:
                    level.errors += 1

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()) + drain_seconds)
        level.cut_off = len(pending)  # each pending worker has exactly one request in flight
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        level.seconds = time.perf_counter() - start
        level.cpu_seconds = server.cpu_seconds() - cpu_start
        level.load = os.getloadavg()[0]
    return level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="most requests per level and mode")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="no new request after this (per level, mode)")
    parser.add_argument("--drain-seconds", type=float, default=300.0, help="then, how long requests may finish")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--no-write", action="store_true", help="print only; leave the docs alone")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its servers (finally)
    bodies, source = workload()
    load_before = os.getloadavg()
    max_queue = max(64, max(args.concurrency))
    servers = {name: Server(options, max_queue) for name, options in MODES.items()}
    results: dict[tuple[int, str], Level] = {}
    try:
        for turn, concurrency in enumerate(args.concurrency):
            order = list(servers.items()) if turn % 2 == 0 else list(servers.items())[::-1]  # alternate who goes first
            for name, server in order:
                level = asyncio.run(
                    run_level(server, bodies, concurrency, args.requests, args.max_seconds, args.drain_seconds)
                )
                results[concurrency, name] = level
                summary = {"concurrency": concurrency, "mode": name, "done": len(level.latencies)}
                summary.update(errors=level.errors, cut_off=level.cut_off, seconds=round(level.seconds, 1))
                summary.update(p50=round(level.percentile(50), 3), cpu_per_request=round(level.cpu_per_request, 2))
                print(json.dumps({**summary, "load": level.load}), flush=True)
        peaks = {name: server.peak_rss_mb() for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    load_after = os.getloadavg()
    rows = []
    for concurrency in args.concurrency:
        for name in MODES:
            level = results[concurrency, name]
            done = len(level.latencies)
            rows.append(
                f"| {concurrency} | {name} | {done} | {level.cut_off} | {level.errors} | {done / level.seconds:.3f} | "
                f"{level.percentile(50):.2f} | {level.percentile(95):.2f} | {level.percentile(99):.2f} | "
                f"{level.cpu_per_request:.2f} | {level.load:.1f} |"
            )
    body = [
        "## Serving throughput: `blockrank serve` under load (CPU, embedded default model)",
        "",
        f"Measured by `bench/serve_load.py` on **{cpu_model()}** (127.0.0.1, client and server on the same "
        f"machine), {time.strftime('%Y-%m-%d')}. Cohere v2 requests of N = {N_DOCUMENTS} documents "
        f"(top_n 10): {source}. Each level: at most {args.requests} requests, none sent after "
        f"{args.max_seconds:g} s; those in flight then finish (up to {args.drain_seconds:g} s more, after which "
        "they are cut off: cancelled, not errors), and requests/s counts the time until the last answer. Both "
        "servers run "
        f"at once and take turns per level; queue limit {max_queue} (at least the concurrency, so errors must be "
        f"0). Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} "
        "cores: above ~2 other jobs shared the CPU and every wall time is inflated. The server's CPU seconds per "
        "completed request (its user + system time over the level, divided by the requests done) depend much "
        "less on such contention than requests/s and latency do.",
        "",
        "Batching (`--max-batch-size 8 --batch-wait-ms 5`) gathers concurrent requests into one `rerank_batch` "
        "call in the worker thread, which packs the prompts that fit `max_pack_tokens` into shared forwards "
        "(multi-query packing); every request of a batch waits for the whole batch. No batching "
        "(`--max-batch-size 1`, the default) answers each request as its own forward ends.",
        "",
        "| concurrency | mode | requests done | cut off | errors | requests/s | p50 s | p95 s | p99 s | server CPU s "
        "per request | load at end |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Server peak RSS (VmHWM over the whole run): "
        + ", ".join(f"{name} {peak:.0f} MB" for name, peak in peaks.items())
        + ".",
    ]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section("serve-load", text)
        write_section("serve-load", text, SERVING_MD)


if __name__ == "__main__":
    main()

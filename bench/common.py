"""Helpers shared by the benchmark scripts: the matmul roofline, peak-RSS sampling, and docs/benchmarks.md sections."""

from __future__ import annotations

import os
import platform
import re
import threading
import time
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def matmul_gflops(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 10) -> float:
    """Best `torch.mm` rate in `dtype` on this machine, in GFLOP/s (the roofline achieved rates are compared to)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples resident memory every few milliseconds; `peak_above_start` is the growth during the block."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.start, self.peak = interval, 0, 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def peak_above_start(self) -> int:
        return self.peak - self.start


class HighWaterRSS:
    """Exact peak resident memory of a block: the kernel's high-water mark (VmHWM), reset on entry.

    Falls back to sampling (`PeakRSS`) where /proc/self/clear_refs cannot be written.
    """

    def __enter__(self) -> "HighWaterRSS":
        self._sampler = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self._sampler = PeakRSS().__enter__()
        self.start = rss_bytes()
        self.peak = self.start
        return self

    def __exit__(self, *exc) -> None:
        if self._sampler is not None:
            self._sampler.__exit__(*exc)
            self.peak = self._sampler.peak
            return
        with open("/proc/self/status") as f:
            self.peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

    @property
    def peak_above_start(self) -> int:
        return self.peak - self.start


CPU_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # the flags that decide fp32/bf16 matmul speed here


def cpu_description() -> str:
    """CPU model name and which of CPU_FLAGS it has (Linux /proc/cpuinfo; the platform's name elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and not model.startswith("model:"):
                    model = "model: " + line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        return model
    present = [flag for flag in CPU_FLAGS if flag in flags]
    return f"{model.removeprefix('model: ')}; flags: {', '.join(present) or 'none of ' + ', '.join(CPU_FLAGS)}"


def machine_line() -> str:
    return f"{cpu_description()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the `name` section of a markdown file (docs/benchmarks.md), leaving other sections alone."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nEvery figure below is written by a script in `bench/`; none is typed by hand.\n"
    )
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)

"""`blockrank serve` under pressure: a burst above the queue limit (503 + Retry-After), a client that goes away
mid-request, a request timeout (504), the event loop kept free during a forward, graceful shutdown of the real
command, and the one-line error when the serve extra is missing.

The worker is held busy with a gate around the real batch runner (`create_app(..., runner=...)`, the seam a
packed multi-query forward plugs into), so that "the model is busy" is a state the test controls, not a race.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Sequence

import httpx
import pytest

from blockrank_rerank.serve import ServeSettings
from blockrank_rerank.serve.batcher import rerank_batch_runner
from serve_harness import running_server
from test_cli_hardening import PYTHON, ROOT, TINY_CLI, error_line, tiny_from_pretrained

DOCS = ["The Moon's gravity pulls the oceans.", "Chess is a board game.", "Tides rise twice a day."]
BODY = {"model": "m", "query": "what causes tides", "documents": DOCS}


class Gate:
    """The real batch runner, held until `release()`: while held, the worker thread is busy."""

    def __init__(self, ranker: Any) -> None:
        self.inner = rerank_batch_runner(ranker)
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.batches = 0

    def __call__(self, pairs: Sequence[tuple[str, list[str]]]) -> list:
        self.entered.set()
        self.opened.wait(timeout=60)
        self.batches += 1
        return self.inner(pairs)

    def release(self) -> None:
        self.opened.set()


@pytest.fixture(scope="module")
def tiny():
    return tiny_from_pretrained()


def post(url: str, timeout: float = 60, **kwargs: Any) -> httpx.Response:
    return httpx.post(url + "/v2/rerank", json=BODY, timeout=timeout, **kwargs)


def test_burst_above_the_queue_limit_gets_503_and_the_server_keeps_working(tiny):
    gate = Gate(tiny)
    settings = ServeSettings(max_queue=2, max_batch_size=1, batch_wait_ms=0, retry_after_s=2)
    with running_server(tiny, settings, runner=gate) as server, ThreadPoolExecutor(12) as pool:
        busy = pool.submit(post, server.url)
        assert gate.entered.wait(30)  # the worker holds the first request
        burst = [pool.submit(post, server.url) for _ in range(10)]
        refused = []
        for future in as_completed(burst, timeout=30):
            response = future.result()
            if response.status_code == 503:
                refused.append(response)
            if len(refused) == 8:
                break
        assert len(refused) == 8  # two fit the queue, eight do not
        assert all(r.headers["retry-after"] == "2" and r.json()["error_type"] == "overloaded" for r in refused)
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200  # the loop is free meanwhile
        gate.release()
        served = [busy.result()] + [f.result() for f in burst if f.result().status_code != 503]
        assert [r.status_code for r in served] == [200, 200, 200]
        want = [d.index for d in tiny.rerank(BODY["query"], DOCS)]
        after = post(server.url)
        assert after.status_code == 200 and [r["index"] for r in after.json()["results"]] == want
        assert server.service.batcher.depth == 0


def test_client_disconnects_mid_request_and_the_server_keeps_working(tiny):
    gate = Gate(tiny)
    with running_server(tiny, ServeSettings(), runner=gate) as server, ThreadPoolExecutor(1) as pool:
        busy = pool.submit(post, server.url)
        assert gate.entered.wait(30)  # the worker holds the first request
        with pytest.raises(httpx.ReadTimeout):
            post(server.url, timeout=0.5)  # queued behind it, gives up and closes its connection
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as raw:  # a body cut short by a vanished client
            raw.sendall(
                b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
                b'{"query": "ti'
            )
        time.sleep(0.3)
        gate.release()
        assert busy.result().status_code == 200
        response = post(server.url)
        assert response.status_code == 200 and len(response.json()["results"]) == 3
        assert gate.batches == 2  # the abandoned request's work was dropped, not run
        metrics = httpx.get(server.url + "/metrics").text
        assert 'blockrank_errors_total{status="499"} 1.0' in metrics and 'status="500"' not in metrics


def test_request_timeout_gives_504_and_skips_the_abandoned_work(tiny):
    gate = Gate(tiny)
    with running_server(tiny, ServeSettings(request_timeout_s=0.3, max_batch_size=1), runner=gate) as server:
        with ThreadPoolExecutor(2) as pool:
            first, second = pool.submit(post, server.url), pool.submit(post, server.url)
            for future in (first, second):
                response = future.result()
                assert response.status_code == 504 and response.json()["error_type"] == "timeout"
        gate.release()
        time.sleep(0.2)
        assert post(server.url).status_code == 200
        assert gate.batches == 2  # the queued, timed-out request was never run


def test_a_long_forward_does_not_hold_the_event_loop(tiny):
    gate = Gate(tiny)
    with running_server(tiny, ServeSettings(), runner=gate) as server, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, server.url)
        assert gate.entered.wait(30)
        start = time.perf_counter()
        for route in ("/health", "/info", "/metrics"):
            assert httpx.get(server.url + route, timeout=5).status_code == 200
        assert time.perf_counter() - start < 2.0
        gate.release()
        assert pending.result().status_code == 200


def test_serve_command_finishes_in_flight_requests_on_sigterm():
    args = ["serve", "--port", "0", "--batch-wait-ms", "1500", "--max-batch-size", "4"]
    process = subprocess.Popen([PYTHON, "-c", TINY_CLI, *args], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+) \(no auth\)", line)
        assert match, line
        url = match.group(1)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server never answered"
                time.sleep(0.1)
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(post, url)
            time.sleep(0.5)  # the request now waits in the batcher's 1.5 s gathering window
            process.send_signal(signal.SIGTERM)
            response = in_flight.result(timeout=30)
        assert response.status_code == 200 and len(response.json()["results"]) == 3
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/health", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def test_without_the_serve_extra_the_command_names_it(monkeypatch, capsys):
    from blockrank_rerank.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if FastAPI were not installed
    for name in ("blockrank_rerank.serve.server", "blockrank_rerank.serve.app"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # imported afresh, so they meet the missing FastAPI
    assert main(["serve", "--port", "0"]) == 2
    line = error_line(capsys)
    assert "fastapi" in line and "pip install blockrank-rerank[serve]" in line


def test_a_bad_serve_option_is_one_line_naming_the_flag(capsys):
    from blockrank_rerank.cli import main

    assert main(["serve", "--max-queue", "0"]) == 2
    assert "--max-queue must be an int >= 1" in error_line(capsys)

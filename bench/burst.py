"""A burst of concurrent clients, on the local stack and on ``langgraph dev``, in the same run.

``BENCH_BURST_CLIENTS`` (200) clients start at the same instant; each creates a thread,
starts a ``support`` run on it (``POST /threads/{tid}/runs``) and polls the run
(``GET /threads/{tid}/runs/{rid}``, every ``BENCH_BURST_POLL_S``, 1 s: the
``time.sleep(1)`` loop of an evaluation script) until it ends, as an
evaluation suite does. Printed for each server: runs/s (runs ended ``success`` / wall time
from the release of the burst to the last run's end), p50/p95 API latency over every request
of the burst, failed requests and runs not ``success``. Goal (the hardening issue): the local
stack at least half of ``langgraph dev``'s runs/s.

Run with ``python -m bench burst`` (part of ``make bench``).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.local import BILLING, langgraph_dev_server, local_server

CLIENTS = int(os.environ.get("BENCH_BURST_CLIENTS", "200"))
POLL_S = float(os.environ.get("BENCH_BURST_POLL_S", "1.0"))
RUN_DEADLINE_S = 600.0


@dataclass
class BurstResult:
    clients: int
    wall_s: float
    statuses: list[str]
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return self.statuses.count("success")

    @property
    def runs_per_s(self) -> float:
        return self.succeeded / self.wall_s if self.wall_s else 0.0

    def latency(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def run_burst(url: str, clients: int = CLIENTS, poll_s: float = POLL_S) -> BurstResult:
    """``clients`` concurrent create-thread / start-run / poll-to-end clients against ``url``."""
    release = threading.Barrier(clients + 1)
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    ended_at: list[float] = []

    def timed(client: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
        started = time.perf_counter()
        response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        with lock:
            latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response

    def one_client(n: int) -> str:
        limits = httpx.Limits(max_connections=1)
        with httpx.Client(base_url=url, timeout=120, limits=limits) as client:
            release.wait()
            try:
                thread = timed(client, "POST", "/threads", json={"metadata": {"burst": n}}).json()
                path = f"/threads/{thread['thread_id']}/runs"
                body = {"assistant_id": "support", "input": BILLING}
                run = timed(client, "POST", path, json=body).json()
                deadline = time.monotonic() + RUN_DEADLINE_S
                status = run["status"]
                while status in ("pending", "running") and time.monotonic() < deadline:
                    time.sleep(poll_s)
                    status = timed(client, "GET", f"{path}/{run['run_id']}").json()["status"]
                with lock:
                    ended_at.append(time.perf_counter())
                return str(status)
            except (httpx.HTTPError, RuntimeError) as exc:
                with lock:
                    failures.append(f"client {n}: {exc!r}"[:300])
                return "failed"

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one_client, n) for n in range(clients)]
        release.wait()
        started = time.perf_counter()
        statuses = [f.result() for f in futures]
    wall = (max(ended_at) if ended_at else time.perf_counter()) - started
    return BurstResult(clients, wall, statuses, latencies, failures)


def _warm(url: str) -> None:
    """One run first on each server: graph compilation is not the burst's cost."""
    run_burst(url, clients=1, poll_s=0.05)


def _line(name: str, result: BurstResult | None, note: str = "") -> str:
    if result is None:
        return f"{name:<20} {'n/a':>8}  {note}"
    return (
        f"{name:<20} {result.runs_per_s:>8.1f} {result.wall_s:>8.1f} "
        f"{result.latency(0.5):>8.0f} {result.latency(0.95):>8.0f} "
        f"{len(result.failures):>8} {result.clients - result.succeeded:>10}"
    )


def main() -> None:
    print(f"burst: {CLIENTS} concurrent clients, each create thread + start support run + poll")
    local: BurstResult | None = None
    dev: BurstResult | None = None
    dev_note = ""
    with local_server() as (url, _):
        _warm(url)
        local = run_burst(url)
    try:
        with (
            tempfile.TemporaryDirectory() as workdir,
            langgraph_dev_server(Path(workdir)) as (
                url,
                _,
            ),
        ):
            _warm(url)
            dev = run_burst(url)
    except RuntimeError as exc:
        dev_note = f"langgraph dev could not be measured here: {exc}"[:300]
    header = (
        f"{'server':<20} {'runs/s':>8} {'wall s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'failed':>8} {'not success':>10}"
    )
    print(header)
    print("-" * len(header))
    print(_line("lambdagraph local", local))
    print(_line("langgraph dev", dev, dev_note))
    if local is not None and dev is not None and dev.runs_per_s:
        ratio = local.runs_per_s / dev.runs_per_s
        print(f"local / dev runs/s: {ratio:.2f}x (goal: at least 0.5x)")
    for result in (local, dev):
        for failure in (result.failures if result else [])[:5]:
            print(f"  {failure}")
    if local is not None:
        print(f"local run statuses: {dict(sorted(_count(local.statuses).items()))}")


def _count(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


if __name__ == "__main__":
    main()

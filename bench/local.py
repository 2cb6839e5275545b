"""Local stack benchmarks: priority under load, and responsiveness against ``langgraph dev``.

(a) priority under load: with 300 ``low`` runs queued, a ``high`` run's completion time
    against its time on an idle stack (goal: at most 2x).
(b) ``runs/wait`` latency of the ``support`` graph per superstep, on the local stack and
    on the official ``langgraph dev`` server running the same graph, in the same run
    (goal: no slower).
(c) time from start (``python -m infra.local``) to ``/ok`` answering, against
    ``langgraph dev`` (goal: at most 2x).

Run with ``make bench`` or ``python -m bench local``. Environment knobs:
``BENCH_LOW_RUNS`` (300), ``BENCH_WAIT_RUNS`` (10), ``BENCH_STARTS`` (3).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BILLING: dict[str, Any] = {
    "messages": [{"role": "user", "content": "I was charged twice on my invoice"}]
}


@dataclass
class Row:
    measure: str
    local: float | None
    dev: float | None
    goal: str
    unit: str = "ms"

    def ratio(self) -> str:
        if self.local is None or self.dev is None or self.dev == 0:
            return "-"
        return f"{self.local / self.dev:.2f}x"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ok(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> float:
    started = time.perf_counter()
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with code {process.returncode} before /ok")
            try:
                if client.get(f"{url}/ok").status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                # Not listening yet.
                pass
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"{url}/ok did not answer within {timeout_s} s")
            time.sleep(0.01)


def _stop(process: subprocess.Popen[bytes]) -> None:
    # Each server was started in its own session; end that group (ours, by its id).
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@contextmanager
def _serve(
    what: str, argv: list[str], *, cwd: Path, env: dict[str, str], port: int, log_path: Path
) -> Iterator[tuple[str, float]]:
    """Start ``argv`` in its own session; yield (url, seconds until /ok answered); stop it."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            try:
                _wait_ok(url, process)
            except (RuntimeError, TimeoutError) as exc:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{what} did not start: {exc}\n{tail}") from exc
            yield url, time.perf_counter() - started
        finally:
            _stop(process)


@contextmanager
def local_server() -> Iterator[tuple[str, float]]:
    """``python -m infra.local`` as ``make run`` starts it; yields (url, seconds to /ok)."""
    port = _free_port()
    env = {**os.environ, "LAMBDAGRAPH_PORT": str(port), "LAMBDAGRAPH_MOTO_PORT": "0"}
    env.pop("LAMBDAGRAPH_API_KEYS", None)
    with (
        tempfile.TemporaryDirectory() as logs,
        _serve(
            "local stack",
            [sys.executable, "-m", "infra.local"],
            cwd=REPO,
            env=env,
            port=port,
            log_path=Path(logs) / "local-stack.log",
        ) as served,
    ):
        yield served


def _langgraph_binary() -> str | None:
    candidate = Path(sys.executable).with_name("langgraph")
    return str(candidate) if candidate.exists() else shutil.which("langgraph")


# Graph id -> "module:function" building it with no arguments (its own checkpointer: the
# dev server attaches one), as ``langgraph dev`` serves it.
DEV_GRAPHS: dict[str, str] = {"support": "graphs.support.graph:build_graph"}


@contextmanager
def langgraph_dev_server(
    workdir: Path, graphs: Mapping[str, str] | None = None
) -> Iterator[tuple[str, float]]:
    """The official dev server (``langgraph dev``) serving the same graphs as the local stack
    (``graphs``: id -> ``module:builder``; the ``support`` graph by default)."""
    binary = _langgraph_binary()
    if binary is None:
        raise RuntimeError("langgraph CLI not installed (pip install 'langgraph-cli[inmem]')")
    entries: dict[str, str] = {}
    for graph_id, target in (graphs or DEV_GRAPHS).items():
        module, _, builder = target.partition(":")
        name = f"{graph_id.replace('-', '_')}_graph.py"
        (workdir / name).write_text(f"from {module} import {builder}\n\ngraph = {builder}()\n")
        entries[graph_id] = f"./{name}:graph"
    (workdir / "langgraph.json").write_text(
        json.dumps({"dependencies": ["."], "graphs": entries}) + "\n"
    )
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LANGSMITH_TRACING": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    }
    with _serve(
        "langgraph dev",
        [binary, "dev", "--no-browser", "--port", str(port)],
        cwd=workdir,
        env=env,
        port=port,
        log_path=workdir / "langgraph-dev.log",
    ) as served:
        yield served


# --- (b) runs/wait latency ---------------------------------------------------------------------


@dataclass
class WaitLatency:
    run_ms: list[float]
    supersteps: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.run_ms)

    @property
    def per_step_ms(self) -> float:
        return self.median_ms / self.supersteps


def measure_wait(url: str, runs: int) -> WaitLatency:
    """``runs/wait`` of one ``support`` run on a fresh thread, ``runs`` times after a warm-up."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=url, api_key="", timeout=120)
    samples: list[float] = []
    supersteps = 0
    for attempt in range(runs + 1):
        thread = client.threads.create()
        started = time.perf_counter()
        client.runs.wait(thread["thread_id"], "support", input=BILLING)
        elapsed = (time.perf_counter() - started) * 1000
        if attempt == 0:
            # Warm-up: the first run compiles the graph on both servers.
            history = client.threads.get_history(thread["thread_id"], limit=100)
            supersteps = max(int((h["metadata"] or {})["step"]) for h in history)
            continue
        samples.append(elapsed)
    return WaitLatency(samples, max(supersteps, 1))


# --- (a) priority under load ---------------------------------------------------------------------


@dataclass
class PriorityResult:
    idle_ms: float
    loaded_ms: float
    backlog: int

    @property
    def ratio(self) -> float:
        return self.loaded_ms / self.idle_ms


def _high_run(client: httpx.Client, priority: str = "high") -> float:
    thread_id = client.post("/threads", json={}).raise_for_status().json()["thread_id"]
    started = time.perf_counter()
    run = (
        client.post(
            f"/threads/{thread_id}/runs",
            json={"assistant_id": "support", "input": BILLING, "priority": priority},
        )
        .raise_for_status()
        .json()
    )
    client.get(f"/threads/{thread_id}/runs/{run['run_id']}/join").raise_for_status()
    elapsed = (time.perf_counter() - started) * 1000
    status = client.get(f"/threads/{thread_id}/runs/{run['run_id']}").json()["status"]
    if status != "success":
        raise RuntimeError(f"high run ended {status}")
    return elapsed


def measure_priority(low_runs: int, samples: int = 7, workers: int | None = None) -> PriorityResult:
    """A high run's completion time on an idle stack and with ``low_runs`` low runs queued."""
    from infra.local.stack import LocalStack

    # The stack runs in this process: keep its step logs off the benchmark's output.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    with (
        LocalStack(port=0, housekeeping_interval_s=0, workers=workers) as stack,
        httpx.Client(base_url=stack.url, timeout=120) as client,
    ):
        _high_run(client)  # warm-up: graph compilation
        idle = statistics.median(_high_run(client) for _ in range(samples))
        # Queue the backlog while the pollers hold off, so it is really waiting.
        stack.pause_steps()
        for _ in range(low_runs):
            thread_id = client.post("/threads", json={}).raise_for_status().json()["thread_id"]
            client.post(
                f"/threads/{thread_id}/runs",
                json={"assistant_id": "support", "input": BILLING, "priority": "low"},
            ).raise_for_status()
        low_url = stack.step_queues()[-1].url
        stack.resume_steps()
        time.sleep(0.2)  # let every worker get busy with low steps
        loaded: list[float] = []
        backlog = 0
        for _ in range(samples):
            backlog = _queue_depth(stack.client("sqs"), low_url)
            loaded.append(_high_run(client))
        return PriorityResult(idle, statistics.median(loaded), backlog)


def _queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


# --- report --------------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} s" if unit == "s" else f"{value:.0f} ms"


def print_table(rows: list[Row]) -> None:
    header = f"{'measure':<52} {'lambdagraph local':>18} {'langgraph dev':>14} {'ratio':>7}  goal"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.measure:<52} {_fmt(row.local, row.unit):>18} {_fmt(row.dev, row.unit):>14} "
            f"{row.ratio():>7}  {row.goal}"
        )


def main() -> None:
    low_runs = int(os.environ.get("BENCH_LOW_RUNS", "300"))
    wait_runs = int(os.environ.get("BENCH_WAIT_RUNS", "10"))
    starts = int(os.environ.get("BENCH_STARTS", "3"))
    rows: list[Row] = []
    notes: list[str] = []

    local_starts: list[float] = []
    local_wait: WaitLatency | None = None
    for attempt in range(starts):
        with local_server() as (url, seconds):
            local_starts.append(seconds)
            if attempt == 0:
                local_wait = measure_wait(url, wait_runs)

    dev_starts: list[float] = []
    dev_wait: WaitLatency | None = None
    try:
        for attempt in range(starts):
            with (
                tempfile.TemporaryDirectory() as tmp,
                langgraph_dev_server(Path(tmp)) as (
                    url,
                    seconds,
                ),
            ):
                dev_starts.append(seconds)
                if attempt == 0:
                    dev_wait = measure_wait(url, wait_runs)
    except RuntimeError as exc:
        notes.append(f"langgraph dev could not be measured here: {exc}")

    assert local_wait is not None
    steps = local_wait.supersteps
    rows.append(
        Row(
            f"start to /ok (median of {starts})",
            statistics.median(local_starts),
            statistics.median(dev_starts) if dev_starts else None,
            "<= 2x langgraph dev",
            unit="s",
        )
    )
    rows.append(
        Row(
            f"runs/wait, support run of {steps} supersteps (median of {wait_runs})",
            local_wait.median_ms,
            dev_wait.median_ms if dev_wait else None,
            "",
        )
    )
    rows.append(
        Row(
            "runs/wait per superstep",
            local_wait.per_step_ms,
            dev_wait.per_step_ms if dev_wait else None,
            "no slower than langgraph dev",
        )
    )
    priority = measure_priority(low_runs)
    print_table(rows)
    print()
    print(f"priority under load (local stack in-process, {low_runs} low runs queued):")
    print(f"  high run, idle stack        {priority.idle_ms:8.0f} ms")
    print(
        f"  high run, low backlog       {priority.loaded_ms:8.0f} ms"
        f"   ({priority.backlog} low messages still queued when it started)"
    )
    print(f"  ratio                       {priority.ratio:8.2f}x   goal <= 2x")
    for note in notes:
        print(f"\nnote: {note}")


if __name__ == "__main__":
    main()

"""Streams: how late events reach an SSE client, on the local stack and on ``langgraph dev``
(``python -m bench streaming``).

A graph of one node writes ``TOKENS`` custom events ``GAP_S`` apart, each carrying the time it
was written; the unmodified SDK streams the run and notes when each arrives (the servers run
on this machine, so the clocks agree). Measured on the local stack (in this process, so its
stream log's writes and reads can be timed too) and on the official ``langgraph dev`` serving
the same graph, in the same run: event written -> SSE client received (p50/p95; goal p95 <=
150 ms on the local stack) and ``POST .../runs/stream`` -> first ``values``.

On the local stack each event's latency is also split where it goes: the publisher's flush
window (written -> its batch's ``UpdateItem`` starts), the write itself, the tail's wait and
``Query`` until it has the event (poll interval + read), and delivery to the client (SSE over
HTTP, the SDK's parsing). Knobs: ``BENCH_STREAM_RUNS`` (5).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

TOKENS = 60
GAP_S = 0.02
GRAPH_ID = "bench-stream"
GOAL_P95_MS = 150.0


class _State(TypedDict, total=False):
    n: int


def build_graph(checkpointer: Any = None, model: Any = None) -> Any:
    """The benchmark graph (``langgraph dev`` builds it with no arguments)."""
    from langgraph.config import get_stream_writer
    from langgraph.graph import START, StateGraph

    def talk(state: _State) -> dict[str, Any]:
        writer = get_stream_writer()
        for i in range(TOKENS):
            writer({"i": i, "at": time.time()})
            time.sleep(GAP_S)
        return {"n": TOKENS}

    builder = StateGraph(_State)
    builder.add_node("talk", talk)
    builder.add_edge(START, "talk")
    return builder.compile(checkpointer=checkpointer)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Figures:
    # ms, per custom event: written -> received; and per run: POST -> first values.
    latency_ms: list[float] = field(default_factory=list)
    first_values_ms: list[float] = field(default_factory=list)
    # ``at`` of each event -> time received (to split the local stack's latency).
    received: dict[float, float] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return _pct(self.latency_ms, q)


def measure(url: str, runs: int) -> Figures:
    """``runs`` streamed runs of the benchmark graph (after a warm-up run) with the SDK."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=url, api_key="", timeout=120)
    figures = Figures()
    for attempt in range(runs + 1):
        thread = client.threads.create()
        started = time.time()
        seen_values = False
        for part in client.runs.stream(
            thread["thread_id"], GRAPH_ID, input={"n": 0}, stream_mode=["values", "custom"]
        ):
            now = time.time()
            if attempt == 0:
                continue  # warm-up: the first run builds the graph on both servers
            if part.event == "values" and not seen_values:
                seen_values = True
                figures.first_values_ms.append((now - started) * 1000)
            if part.event == "custom":
                figures.latency_ms.append((now - part.data["at"]) * 1000)
                figures.received[part.data["at"]] = now
    return figures


class StageClock:
    """When each custom event's batch was written and first read back, from the local
    stack's stream log (``StreamLog.put`` / ``read`` wrapped, in this process)."""

    def __init__(self) -> None:
        self.put_start: dict[float, float] = {}
        self.put_end: dict[float, float] = {}
        self.read: dict[float, float] = {}
        self.query_ms: list[float] = []
        self.puts = 0
        self._lock = threading.Lock()

    def install(self) -> Callable[[], None]:
        from functions.streaming.log import StreamLog

        put, read = StreamLog.put, StreamLog.read
        clock = self

        def timed_put(log: Any, run_id: str, step: int, attempt: int, first: int, events: Any):
            began = time.time()
            result = put(log, run_id, step, attempt, first, events)
            ended = time.time()
            with clock._lock:
                clock.puts += 1
                for name, data in events:
                    if name == "custom":
                        at = json.loads(data)["at"]
                        clock.put_start[at], clock.put_end[at] = began, ended
            return result

        def timed_read(log: Any, run_id: str, **kwargs: Any) -> Any:
            began = time.time()
            batches = read(log, run_id, **kwargs)
            ended = time.time()
            with clock._lock:
                clock.query_ms.append((ended - began) * 1000)
                for batch in batches:
                    for event in batch.events:
                        if event.name == "custom":
                            clock.read.setdefault(json.loads(event.data)["at"], ended)
            return batches

        StreamLog.put, StreamLog.read = timed_put, timed_read  # type: ignore[method-assign]

        def uninstall() -> None:
            StreamLog.put, StreamLog.read = put, read  # type: ignore[method-assign]

        return uninstall

    def stages(self, figures: Figures) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"flush window": [], "write": [], "poll + read": []}
        out["delivery"] = []
        for at, received in figures.received.items():
            if at not in self.put_start or at not in self.read:
                continue
            out["flush window"].append((self.put_start[at] - at) * 1000)
            out["write"].append((self.put_end[at] - self.put_start[at]) * 1000)
            out["poll + read"].append((self.read[at] - self.put_end[at]) * 1000)
            out["delivery"].append((received - self.read[at]) * 1000)
        return out


def _local(runs: int) -> tuple[Figures, StageClock]:
    from graphs import registry
    from infra.local.stack import running_stack

    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    registry.GRAPHS[GRAPH_ID] = build_graph
    clock = StageClock()
    uninstall = clock.install()
    try:
        with running_stack(port=0, housekeeping_interval_s=0) as stack:
            figures = measure(stack.url, runs)
    finally:
        uninstall()
    return figures, clock


def _dev(runs: int) -> Figures:
    from bench.local import langgraph_dev_server

    with (
        tempfile.TemporaryDirectory() as tmp,
        langgraph_dev_server(Path(tmp), {GRAPH_ID: "bench.streaming:build_graph"}) as (url, _),
    ):
        return measure(url, runs)


def main() -> None:
    runs = int(os.environ.get("BENCH_STREAM_RUNS", "5"))
    local, clock = _local(runs)
    dev: Figures | None = None
    note = ""
    try:
        dev = _dev(runs)
    except RuntimeError as exc:
        note = f"langgraph dev could not be measured here: {exc}"

    print(f"{TOKENS} custom events {GAP_S * 1000:.0f} ms apart per run, {runs} runs (SDK client)")
    print(f"{'measure':<42} {'lambdagraph local':>18} {'langgraph dev':>14}  goal")
    rows: list[tuple[str, Callable[[Figures], float], str]] = [
        ("event written -> received, p50", lambda f: f.p(0.5), ""),
        ("event written -> received, p95", lambda f: f.p(0.95), f"<= {GOAL_P95_MS:.0f} ms"),
        ("event written -> received, max", lambda f: max(f.latency_ms), ""),
        (
            "POST .../runs/stream -> first values, p50",
            lambda f: statistics.median(f.first_values_ms),
            "",
        ),
    ]
    for label, get, goal in rows:
        theirs = f"{get(dev):.0f} ms" if dev else "n/a"
        print(f"{label:<42} {get(local):>15.0f} ms {theirs:>14}  {goal}")
    print("\nlocal stack, where an event's latency goes (ms: p50 / p95):")
    for stage, values in clock.stages(local).items():
        if values:
            print(f"  {stage:<14} {statistics.median(values):6.0f} / {_pct(values, 0.95):4.0f}")
    if clock.query_ms:
        print(
            f"  (a log Query: p50 {statistics.median(clock.query_ms):.1f} ms, "
            f"p95 {_pct(clock.query_ms, 0.95):.1f} ms; "
            f"{clock.puts / max(runs + 1, 1):.1f} log writes per run)"
        )
    if note:
        print(f"\nnote: {note}")


if __name__ == "__main__":
    main()

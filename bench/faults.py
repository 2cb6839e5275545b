"""Reliability under faults: 200 ``support`` runs with crashes, duplicates and throttling.

Starts ``python -m infra.local`` twice, each time in a fresh process: once fault-free (the
reference), once with ``LAMBDAGRAPH_FAULTS=crash=0.2,duplicate=0.3,throttle=0.05``, both at
the same time scale (60: the function timeout is 5 s, the lease 6 s, the visibility timeout
30 s, housekeeping every 5 s). Each time it starts the same 200 runs (varied billing,
technical and general messages), waits until every run has ended or nothing has moved for
two visibility timeouts, and then measures from the API and from moto:

- runs lost: ended in another status than ``success``, or gone;
- runs stuck: still ``pending`` / ``running`` at the end;
- runs with another result: ``success``, but final messages differ from the fault-free run
  of the same input;
- steps run twice: checkpoints repeating a superstep number of their thread (``get_history``,
  ``metadata.step``), i.e. a superstep executed more than once;
- checkpoints beyond the fault-free run: per thread, checkpoints over the reference count;
- threads left busy after their run ended;
- DLQ messages: on the three step queues' dead-letter queues;
- time overhead: first run started to last run ended, against the fault-free pass.

All of them should be 0 (and the overhead what the recoveries cost). Run with
``python -m bench faults``. Knobs: ``BENCH_FAULT_RUNS`` (200), ``BENCH_FAULTS``,
``BENCH_FAULT_TIME_SCALE`` (60), ``BENCH_FAULT_SEED`` (unset: random).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx

from bench.local import REPO, _free_port, _serve
from functions.resources import STEP_QUEUES
from infra.local.resources import dlq_name

DEFAULT_FAULTS = "crash=0.2,duplicate=0.3,throttle=0.05"
ACTIVE = ("pending", "running")
# No "cancel": that route stops at an approval interrupt, which needs a human.
MESSAGES = (
    "I was charged twice for order {n}",
    "My invoice {n} shows the wrong amount",
    "The app crashes when I upload file {n}",
    "I cannot log in since update {n}",
    "What are your opening hours for store {n}?",
    "Do you ship to country number {n}?",
)


@dataclass
class Pass:
    """What one pass (fault-free or faulty) measured."""

    label: str
    faults: str
    wall_s: float = 0.0
    statuses: dict[str, str] = field(default_factory=dict)  # run id -> final status
    results: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # run id -> messages
    checkpoints: dict[str, int] = field(default_factory=dict)  # run id -> checkpoints on thread
    repeated_steps: dict[str, int] = field(default_factory=dict)  # run id -> supersteps repeated
    threads_left_busy: int = 0
    dlq_messages: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # run id -> its message
    threads: dict[str, str] = field(default_factory=dict)  # run id -> thread id
    # run id -> (step, source, next) of each checkpoint, oldest first (for the examples)
    histories: dict[str, list[tuple[Any, Any, list[str]]]] = field(default_factory=dict)


@contextmanager
def _stack(faults: str, scale: str, seed: str | None, log_dir: Path) -> Iterator[tuple[str, str]]:
    """``python -m infra.local`` with ``faults``; yields (API url, moto url)."""
    port, moto_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "LAMBDAGRAPH_PORT": str(port),
        "LAMBDAGRAPH_MOTO_PORT": str(moto_port),
        "LAMBDAGRAPH_LOCAL_TIME_SCALE": scale,
        "LAMBDAGRAPH_FAULTS": faults,
        # The same (quiet) logging in both passes: step lines would cost the faulty one more.
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    for name in ("LAMBDAGRAPH_API_KEYS", "LAMBDAGRAPH_LEASE_S", "LAMBDAGRAPH_LOCAL_HOUSEKEEPING_S"):
        env.pop(name, None)
    if seed:
        env["LAMBDAGRAPH_FAULTS_SEED"] = seed
    label = "faulty" if faults else "fault-free"
    with _serve(
        f"local stack ({label})",
        [sys.executable, "-m", "infra.local"],
        cwd=REPO,
        env=env,
        port=port,
        log_path=log_dir / f"local-stack-{label}.log",
    ) as (url, _):
        yield url, f"http://127.0.0.1:{moto_port}"


def _messages(values: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(m.get("type")), str(m.get("content"))) for m in values.get("messages") or []]


def run_pass(label: str, faults: str, runs: int, scale: float, seed: str | None) -> Pass:
    from langgraph_sdk import get_sync_client

    result = Pass(label, faults)
    # Two visibility timeouts with nothing ending: whatever is still active is stuck.
    stall_s = 2 * 1800 / scale + 2 * 300 / scale
    with (
        tempfile.TemporaryDirectory() as logs,
        _stack(faults, str(scale), seed, Path(logs)) as (
            url,
            moto_url,
        ),
    ):
        client = get_sync_client(url=url, api_key=None, timeout=120)
        # Warm-up (graph compiled, API environment started), on its own thread; not counted.
        warm = client.threads.create()
        client.runs.wait(warm["thread_id"], "support", input=_input(MESSAGES[0].format(n=0)))

        started = time.perf_counter()
        threads: dict[str, str] = {}  # run id -> thread id
        for n in range(runs):
            text = MESSAGES[n % len(MESSAGES)].format(n=n)
            thread = client.threads.create()
            run = client.runs.create(thread["thread_id"], "support", input=_input(text))
            threads[run["run_id"]] = thread["thread_id"]
            result.inputs[run["run_id"]] = text
        active = set(threads)
        last_end = time.perf_counter()
        while active and time.perf_counter() - last_end < stall_s:
            time.sleep(1.0)
            busy = {
                t["thread_id"]
                for t in client.threads.search(status="busy", limit=1000)  # type: ignore[arg-type]
            }
            # A run whose thread is no longer busy has likely ended: confirm it.
            for run_id in [r for r in active if threads[r] not in busy]:
                status = client.runs.get(threads[run_id], run_id)["status"]
                if status not in ACTIVE:
                    active.discard(run_id)
                    last_end = time.perf_counter()
        # The rest: busy threads whose runs ended anyway (threads left busy), or stuck runs.
        for run_id in list(active):
            if client.runs.get(threads[run_id], run_id)["status"] not in ACTIVE:
                active.discard(run_id)
        result.wall_s = last_end - started
        result.threads = threads

        for run_id, thread_id in threads.items():
            try:
                run = client.runs.get(thread_id, run_id)
            except Exception:
                result.statuses[run_id] = "gone"
                continue
            result.statuses[run_id] = run["status"]
            thread = client.threads.get(thread_id)
            if run["status"] not in ACTIVE and thread["status"] == "busy":
                result.threads_left_busy += 1
            result.results[run_id] = _messages(client.threads.get_state(thread_id)["values"] or {})
            history = client.threads.get_history(thread_id, limit=1000)
            result.checkpoints[run_id] = len(history)
            result.histories[run_id] = [
                ((h["metadata"] or {}).get("step"), (h["metadata"] or {}).get("source"), h["next"])
                for h in reversed(history)
            ]
            steps = collections.Counter((h["metadata"] or {}).get("step") for h in history)
            result.repeated_steps[run_id] = sum(count - 1 for count in steps.values())
        result.injected = httpx.get(f"{url}/_local/faults").json()
        result.dlq_messages = _dlq_messages(moto_url)
    return result


def _input(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def _dlq_messages(moto_url: str) -> int:
    sqs = boto3.client(
        "sqs",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    total = 0
    for spec in STEP_QUEUES.values():
        url = sqs.get_queue_url(QueueName=dlq_name(spec))["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        total += int(attributes["ApproximateNumberOfMessages"])
        total += int(attributes["ApproximateNumberOfMessagesNotVisible"])
    return total


@dataclass
class Figures:
    runs: int
    runs_lost: int
    runs_stuck: int
    runs_with_another_result: int
    steps_run_twice: int
    checkpoints_beyond_fault_free: int
    threads_left_busy: int
    dlq_messages: int
    fault_free_s: float
    faulty_s: float
    injected: dict[str, int]
    fault_free_problems: int
    # A few runs behind the non-zero figures, for whoever fixes them.
    examples: list[str] = field(default_factory=list)

    @property
    def overhead(self) -> float:
        return self.faulty_s / self.fault_free_s if self.fault_free_s else float("nan")


def compare(reference: Pass, faulty: Pass) -> Figures:
    """The faulty pass measured against the fault-free one, input by input."""
    # Reference per input text: the fault-free results and checkpoint counts.
    expected = {reference.inputs[r]: r for r in reference.statuses}
    lost = stuck = other = beyond = 0
    examples: list[str] = []

    def example(kind: str, run_id: str, detail: str) -> None:
        if sum(e.startswith(kind) for e in examples) < 3:
            examples.append(
                f"{kind}: run {run_id} thread {faulty.threads.get(run_id)} "
                f"input {faulty.inputs[run_id]!r}: {detail}; "
                f"checkpoints (step, source, next): {faulty.histories.get(run_id)}"
            )

    for run_id, status in faulty.statuses.items():
        if status in ACTIVE:
            stuck += 1
            example("stuck", run_id, f"status {status}")
            continue
        if status != "success":
            lost += 1
            example("lost", run_id, f"status {status}")
            continue
        ref = expected[faulty.inputs[run_id]]
        if faulty.results.get(run_id) != reference.results.get(ref):
            other += 1
            example(
                "another result",
                run_id,
                f"messages {_short(faulty.results.get(run_id))}, fault-free "
                f"{_short(reference.results.get(ref))}",
            )
        if faulty.repeated_steps.get(run_id):
            example("step run twice", run_id, f"{faulty.repeated_steps[run_id]} repeated")
        beyond += max(0, faulty.checkpoints.get(run_id, 0) - reference.checkpoints.get(ref, 0))
    # The reference itself should be clean; if not, its figures say so.
    reference_problems = sum(
        1 for status in reference.statuses.values() if status != "success"
    ) + sum(reference.repeated_steps.values())
    return Figures(
        runs=len(faulty.statuses),
        runs_lost=lost,
        runs_stuck=stuck,
        runs_with_another_result=other,
        steps_run_twice=sum(faulty.repeated_steps.values()),
        checkpoints_beyond_fault_free=beyond,
        threads_left_busy=faulty.threads_left_busy,
        dlq_messages=faulty.dlq_messages,
        fault_free_s=reference.wall_s,
        faulty_s=faulty.wall_s,
        injected=faulty.injected,
        fault_free_problems=reference_problems,
        examples=examples,
    )


def _short(messages: list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    return [(kind, text[:40]) for kind, text in messages or []]


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "functions"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted engine changes' if dirty else ''}"


def report(figures: Figures, faults: str, scale: float) -> str:
    rows = [
        ("runs lost (ended other than success, or gone)", figures.runs_lost),
        ("runs stuck (still pending/running)", figures.runs_stuck),
        ("runs with another result than fault-free", figures.runs_with_another_result),
        ("steps run twice (repeated superstep numbers)", figures.steps_run_twice),
        ("checkpoints beyond the fault-free run", figures.checkpoints_beyond_fault_free),
        ("threads left busy after their run ended", figures.threads_left_busy),
        ("DLQ messages", figures.dlq_messages),
    ]
    lines = [
        f"{figures.runs} support runs, LAMBDAGRAPH_FAULTS={faults}, time scale {scale:g}; "
        f"measured {datetime.now(UTC):%Y-%m-%d} at {_commit()}",
        f"faults injected: {figures.injected}",
        "",
        "| measure | faulty run | goal |",
        "|---|---|---|",
        *(f"| {name} | {value} | 0 |" for name, value in rows),
        f"| time, first run started to last run ended | {figures.faulty_s:.1f} s vs "
        f"{figures.fault_free_s:.1f} s fault-free ({figures.overhead:.2f}x) | |",
    ]
    if figures.examples:
        lines += ["", "examples:", *(f"- {e}" for e in figures.examples)]
    if figures.fault_free_problems:
        lines.append(f"(the fault-free pass itself had {figures.fault_free_problems} problems)")
    return "\n".join(lines)


def main() -> None:
    runs = int(os.environ.get("BENCH_FAULT_RUNS", "200"))
    faults = os.environ.get("BENCH_FAULTS", DEFAULT_FAULTS)
    scale = float(os.environ.get("BENCH_FAULT_TIME_SCALE", "60"))
    seed = os.environ.get("BENCH_FAULT_SEED") or None
    print(f"fault-free pass: {runs} runs ...", flush=True)
    reference = run_pass("fault-free", "", runs, scale, seed)
    print(f"faulty pass: {runs} runs, LAMBDAGRAPH_FAULTS={faults} ...", flush=True)
    faulty = run_pass("faulty", faults, runs, scale, seed)
    figures = compare(reference, faulty)
    print(report(figures, faults, scale))
    summary = {k: v for k, v in asdict(figures).items() if k != "examples"}
    print(json.dumps({"figures": summary, "overhead": round(figures.overhead, 2)}))


if __name__ == "__main__":
    main()

"""Crash points, the larger sweep (``make bench``; ``python -m bench crashpoints`` alone).

The harness of ``tests/crashpoints`` (read its module docstring) on a moto server started
here, with more than ``make test`` runs:

- the ``make test`` scenarios with **every** crash point replayed on its own (the tests
  replay one point per class of equivalent points — a crash after call k and one before call
  k+1 of the same invocation, or on either side of a read, leave the same state); this
  sweep also checks that premise: equivalent points must end alike;
- bigger scenarios (a three-run conversation, three runs enqueued, two threads with an
  interrupt rejected on resume, a multitask ``interrupt``), one replay per class;
- throttling (DynamoDB/SQS, seeded per call) with every step message delivered twice,
  sometimes concurrently, over more seeds and two throttling rates.

Prints a table, the total ``crash points explored``, and every failure (scenario, crash
point, the AWS call, what differed); exits 1 if any. Knobs: ``CRASHPOINTS_SEEDS`` (20),
``CRASHPOINTS_SCENARIOS`` (comma-separated names; default all), ``CRASHPOINTS_EVERY_POINT``
(``1``: every point of the test scenarios; ``0``: one per class everywhere; ``all``: every
point of every scenario).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_NAMESPACE": "lambdagraph",
        "POWERTOOLS_SERVICE_NAME": "lambdagraph",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        os.environ.setdefault(key, value)
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        failed = sweep(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
    if failed:
        raise SystemExit(1)


def sweep(endpoint: str) -> int:
    from tests.crashpoints.harness import Environment, Exploration, explore_crashes, explore_noise
    from tests.crashpoints.scenarios import BENCH_SCENARIOS, SCENARIOS

    seeds = int(os.environ.get("CRASHPOINTS_SEEDS", "20"))
    every = os.environ.get("CRASHPOINTS_EVERY_POINT", "1")
    wanted = {n for n in os.environ.get("CRASHPOINTS_SCENARIOS", "").split(",") if n}
    scenarios = [
        (s, every in ("1", "all") if s in SCENARIOS else every == "all")
        for s in [*SCENARIOS, *BENCH_SCENARIOS]
        if not wanted or s.name in wanted
    ]
    rows: list[tuple[str, Exploration, list[Exploration]]] = []
    started = time.perf_counter()
    out = sys.stdout

    def progress(text: str) -> None:
        print(text, file=out, flush=True)

    # The handlers' EMF metric lines (Powertools prints them on stdout) are not figures.
    with Environment(endpoint) as env, open(os.devnull, "w") as devnull:
        for scenario, every_point in scenarios:
            progress(f"{scenario.name}: crash points{' (every one)' if every_point else ''} ...")
            with contextlib.redirect_stdout(devnull):
                crashes = explore_crashes(env, scenario, every_point=every_point)
            progress(f"  {crashes.summary()}")
            noise = []
            for throttle in (0.1, 0.25):
                with contextlib.redirect_stdout(devnull):
                    result = explore_noise(env, scenario, seeds=range(seeds), throttle=throttle)
                progress(f"  throttle {throttle} x {seeds} seeds: {result.summary()}")
                noise.append(result)
            rows.append((scenario.name, crashes, noise))

    print()
    header = (
        f"{'scenario':<20} {'calls':>5} {'points':>6} {'replays':>7} {'failed':>6}"
        f" {'noise runs':>10} {'failed':>6} {'seconds':>7}"
    )
    print(header)
    print("-" * len(header))
    failures = []
    for name, crashes, noise in rows:
        noise_runs = sum(n.points for n in noise)
        noise_failed = sum(len(n.failures) for n in noise)
        seconds = crashes.seconds + sum(n.seconds for n in noise)
        print(
            f"{name:<20} {len(crashes.calls):>5} {crashes.points:>6} {crashes.replays:>7}"
            f" {crashes.failed_points:>6} {noise_runs:>10} {noise_failed:>6} {seconds:>7.0f}"
        )
        failures += crashes.failures
        for n in noise:
            failures += n.failures
    points = sum(c.points for _, c, _ in rows)
    replays = sum(c.replays for _, c, _ in rows)
    print(f"\ncrash points explored: {points} ({replays} replays)")
    print(f"throttled/duplicated runs: {sum(n.points for *_, ns in rows for n in ns)}")
    print(f"failures: {len(failures)}; {time.perf_counter() - started:.0f}s")
    for failure in failures:
        print(f"\n{failure}")
    sys.stdout.flush()
    return len(failures)


if __name__ == "__main__":
    main()

"""A burst of clients at once on ``python -m infra.local``: every request is answered.

An evaluation suite starts tens or hundreds of conversations at the same moment. API Gateway
queues such a burst; the local gateway must too, not reset connections (the stdlib server's
listen backlog of 5 did: 9 of 100 simultaneous clients got an answer).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

CLIENTS = 200


def test_a_burst_of_200_clients_connecting_at_once_is_queued_and_answered(
    local_stack_url: str,
) -> None:
    # GIVEN 200 clients, each with its own connection, released at the same instant
    start = threading.Barrier(CLIENTS)

    def create_and_read_thread(n: int) -> tuple[int, int]:
        with httpx.Client(base_url=local_stack_url, timeout=120) as client:
            start.wait()
            created = client.post("/threads", json={"metadata": {"burst": n}})
            if created.status_code != 200:
                return created.status_code, 0
            read = client.get(f"/threads/{created.json()['thread_id']}")
            return created.status_code, read.status_code

    # WHEN they all create a thread and read it back
    with ThreadPoolExecutor(CLIENTS) as pool:
        try:
            outcomes = list(pool.map(create_and_read_thread, range(CLIENTS)))
        except (OSError, httpx.TransportError) as exc:
            pytest.fail(f"a client of the burst got no answer: {exc!r}")

    # THEN every request was answered, and answered well
    assert outcomes == [(200, 200)] * CLIENTS


def test_200_clients_each_running_a_conversation_at_once_all_end_in_success(
    local_stack_url: str,
) -> None:
    """An evaluation suite's burst: 200 clients at once each create a thread, start a
    ``support`` run and poll it until it ends. Every request is answered (no reset, no 5xx,
    no 504) and every run ends ``success``; how fast is ``python -m bench burst``'s figure."""
    from bench.burst import run_burst

    # WHEN 200 clients released at the same instant each run one conversation
    result = run_burst(local_stack_url, clients=CLIENTS, poll_s=1.0)

    # THEN no request failed and every run succeeded
    assert result.failures == []
    assert result.statuses == ["success"] * CLIENTS
    # (each client made at least its create-thread, create-run and one poll)
    assert len(result.latencies_ms) >= 3 * CLIENTS

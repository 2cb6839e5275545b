"""Housekeeping with a backlog larger than one page of the lease index."""

from __future__ import annotations

import time

import pytest

from functions import housekeeping
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

BACKLOG = 130  # more than one 100-item page, spread over the lease shards


def _backlog(stack: Stack) -> list[tuple[str, str]]:
    runs = []
    for _ in range(BACKLOG):
        thread_id = stack.create_thread()
        runs.append((thread_id, stack.start_run(thread_id, input={"messages": []})["run_id"]))
    return runs


def _resends(stack: Stack, runs: list[tuple[str, str]]) -> list[int]:
    return [stack.store.get_run(t, r).resends for t, r in runs]  # type: ignore[union-attr]


def test_one_pass_recovers_a_backlog_over_one_page(stack: Stack) -> None:
    # GIVEN more runs past their deadline than one 100-item query returns
    runs = _backlog(stack)
    later = time.time() + 3600

    # WHEN housekeeping passes once
    recovered = housekeeping.requeue_expired(stack.runs, now=later)

    # THEN every run's step was re-sent, each exactly once
    assert recovered == BACKLOG
    assert _resends(stack, runs) == [1] * BACKLOG


def test_a_pass_is_bounded_and_the_next_one_continues(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN small pages (4 runs, 3 pages a shard: at most 120 runs a pass) and 130 expired runs
    monkeypatch.setattr(housekeeping, "PAGE_SIZE", 4)
    monkeypatch.setattr(housekeeping, "MAX_PAGES_PER_SHARD", 3)
    runs = _backlog(stack)
    later = time.time() + 3600

    # WHEN housekeeping passes until nothing is left
    passes = []
    while not passes or passes[-1]:
        passes.append(housekeeping.requeue_expired(stack.runs, now=later))
        assert len(passes) < 10

    # THEN the first pass followed several pages a shard but stopped at its bound, the later
    # passes took the rest, and each run was re-sent exactly once
    assert 10 * 4 < passes[0] <= 10 * 4 * 3
    assert sum(passes) == BACKLOG
    assert _resends(stack, runs) == [1] * BACKLOG

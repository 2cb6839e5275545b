"""The basic path: create thread -> run -> worker steps -> success -> join -> state/history."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

BILLING = {"messages": [{"role": "user", "content": "I was charged twice on my invoice"}]}


def test_background_run_completes_through_the_step_worker(stack: Stack) -> None:
    # GIVEN a thread
    thread_id = stack.create_thread(metadata={"user": "ada"})

    # WHEN a background run is created and its step messages are delivered to the worker
    reply = stack.api(
        "POST", f"/threads/{thread_id}/runs", {"assistant_id": "support", "input": BILLING}
    )
    run = reply.body
    steps = stack.pump()

    # THEN the API answered at once with a pending run and its location
    assert reply.status == 200
    assert run["status"] == "pending"
    assert reply.headers["Content-Location"] == f"/threads/{thread_id}/runs/{run['run_id']}"
    # AND the run took several supersteps and succeeded
    assert steps == 3
    got = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert got["status"] == "success"
    # AND join returns the final values with the billing specialist's reply
    values = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    assert values["messages"][-1]["type"] == "ai"
    assert values["messages"][-1]["content"].startswith("Billing here")
    assert values["route"] == "billing:done"
    # AND the thread is idle with the same values
    thread = stack.api("GET", f"/threads/{thread_id}").body
    assert thread["status"] == "idle"
    assert thread["values"]["messages"][-1]["content"].startswith("Billing here")


def test_state_and_history_after_a_run(stack: Stack) -> None:
    # GIVEN a finished run
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    stack.pump()

    # WHEN the state and history are read
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    history = stack.api("POST", f"/threads/{thread_id}/history", {"limit": 10}).body

    # THEN the state is finished and shaped like the SDK's ThreadState
    assert state["next"] == []
    assert state["tasks"] == []
    assert state["interrupts"] == []
    assert state["checkpoint"]["thread_id"] == thread_id
    assert state["checkpoint"]["checkpoint_id"]
    assert state["parent_checkpoint"]["checkpoint_id"]
    assert state["values"]["route"] == "billing:done"
    # AND history lists every checkpoint newest first, starting with the current one
    assert len(history) == 5
    assert history[0]["checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    assert history[-1]["metadata"]["source"] == "input"
    # AND limit is honoured
    assert len(stack.api("POST", f"/threads/{thread_id}/history", {"limit": 2}).body) == 2


def test_second_run_on_the_same_thread_continues_the_conversation(stack: Stack) -> None:
    # GIVEN a thread with one finished run
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    stack.pump()

    # WHEN a second run is started and completes
    second = stack.start_run(
        thread_id, input={"messages": [{"role": "user", "content": "now the app shows an error"}]}
    )
    stack.pump()

    # THEN both runs are listed newest first and the conversation grew
    runs = stack.api("GET", f"/threads/{thread_id}/runs").body
    assert runs[0]["run_id"] == second["run_id"]
    assert [r["status"] for r in runs] == ["success", "success"]
    values = stack.api("GET", f"/threads/{thread_id}/runs/{second['run_id']}/join").body
    assert len(values["messages"]) == 4
    assert values["messages"][-1]["content"].startswith("Technical support")


def test_runs_wait_returns_current_values_when_the_run_is_not_done_in_time(stack: Stack) -> None:
    # GIVEN a thread that ran once, and no worker draining the queue after that
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    stack.pump()
    so_far = stack.api("GET", f"/threads/{thread_id}/state").body["values"]

    # WHEN runs/wait is called
    reply = stack.api(
        "POST", f"/threads/{thread_id}/runs/wait", {"assistant_id": "support", "input": BILLING}
    )

    # THEN it answers after the join timeout with the values so far and where to poll
    assert reply.status == 200
    assert so_far["messages"]
    assert reply.body == so_far
    assert reply.headers["Content-Location"].startswith(f"/threads/{thread_id}/runs/")
    run_id = reply.headers["Content-Location"].rsplit("/", 1)[1]
    assert stack.api("GET", f"/threads/{thread_id}/runs/{run_id}").body["status"] == "pending"


def test_history_filters_by_metadata_and_pages_with_before(stack: Stack) -> None:
    # GIVEN a finished run (five checkpoints)
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    stack.pump()
    everything = stack.api("POST", f"/threads/{thread_id}/history", {"limit": 10}).body

    # WHEN history is filtered by checkpoint metadata and paged with before
    inputs = stack.api(
        "POST", f"/threads/{thread_id}/history", {"metadata": {"source": "input"}}
    ).body
    older = stack.api(
        "POST",
        f"/threads/{thread_id}/history",
        {"before": {"checkpoint_id": everything[1]["checkpoint"]["checkpoint_id"]}, "limit": 10},
    ).body

    # THEN only matching checkpoints come back, and paging continues after the cursor
    assert [s["metadata"]["source"] for s in inputs] == ["input"]
    assert [s["checkpoint"] for s in older] == [s["checkpoint"] for s in everything[2:]]


def test_high_priority_run_stays_on_the_high_queue(stack: Stack) -> None:
    # GIVEN a high-priority run
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING, priority="high")

    # WHEN its step messages are delivered one by one
    seen = []
    while batch := stack.receive(1):
        priority, message = batch[0]
        seen.append(priority)
        stack.deliver(priority, [message])

    # THEN every step went through the high queue
    assert seen == ["high", "high", "high"]


def test_retention_setting_expires_checkpoints_and_runtime_records(
    stack: Stack, moto_endpoint: str
) -> None:
    # GIVEN a deployment with LAMBDAGRAPH_TTL_DAYS=7
    stack = Stack(moto_endpoint, ttl_days=7)
    thread_id = stack.create_thread()

    # WHEN a run goes through the worker
    stack.start_run(thread_id, input=BILLING)
    stack.pump()

    # THEN runtime records carry a `ttl` 7 days ahead, and checkpoint items one at least as
    # far (the saver adds a margin of up to a day so that what a head is rebuilt from
    # outlives it: docs/checkpointer.md, "Retention")
    now = time.time()
    margins = {stack.settings.checkpoint_table: 86400, stack.settings.runtime_table: 0}
    for table, margin in margins.items():
        items = stack.dynamodb.scan(TableName=table)["Items"]
        assert items, table
        for item in items:
            if item["pk"]["S"].startswith("APIKEY#"):
                continue
            expires = int(item["ttl"]["N"])
            assert 6.9 * 86400 < expires - now <= 7 * 86400 + margin + 60, (table, item["sk"])

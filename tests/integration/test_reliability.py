"""At-least-once delivery made exactly-once in effect; errors; housekeeping."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from functions.executor import run_superstep, thread_config
from functions.graph_loader import load_graph
from functions.store import Ending
from graphs import registry
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

BILLING = {"messages": [{"role": "user", "content": "I want a refund"}]}


def _ai_messages(stack: Stack, thread_id: str) -> list[dict[str, Any]]:
    values = stack.api("GET", f"/threads/{thread_id}/state").body["values"]
    return [m for m in values["messages"] if m["type"] == "ai"]


def test_duplicate_step_message_is_dropped(stack: Stack) -> None:
    # GIVEN a run whose first step message was delivered
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])

    # WHEN SQS delivers the same message again (at-least-once delivery)
    stack.sqs.send_message(QueueUrl=stack.queue_urls[priority], MessageBody=message["Body"])
    steps = stack.pump()

    # THEN the duplicate did nothing: one reply, and the usual number of steps
    assert steps == 3  # the duplicate + steps 2 and 3
    assert len(_ai_messages(stack, thread_id)) == 1
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"] == "success"
    )


def test_duplicate_of_a_finished_step_is_dropped_even_after_its_lease_expired(stack: Stack) -> None:
    # GIVEN a finished run
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    first = stack.receive(1)[0][1]["Body"]
    stack.sqs.send_message(QueueUrl=stack.queue_urls["normal"], MessageBody=first)
    stack.pump()

    # WHEN an old step message turns up much later
    stack.sqs.send_message(QueueUrl=stack.queue_urls["normal"], MessageBody=first)
    stack.pump()

    # THEN the thread is unchanged
    assert len(_ai_messages(stack, thread_id)) == 1
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"] == "success"
    )


def test_step_claimed_by_a_live_worker_is_not_run_twice(stack: Stack) -> None:
    # GIVEN a worker that has claimed step 1 and is still working on it (live lease)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    stack.store.claim_step(thread_id, run["run_id"], 1, time.time() + 300, "live-worker")

    # WHEN a second copy of the message arrives
    steps = stack.pump()

    # THEN it is dropped; the run stays with the live worker
    assert steps == 1
    assert stack.api("GET", f"/threads/{thread_id}/state").body["values"] == {}
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"] == "running"
    )


def test_crashed_step_is_retried_after_its_lease_expired(stack: Stack) -> None:
    # GIVEN a worker claimed step 1 and died before running it (its lease has expired)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    stack.store.claim_step(thread_id, run["run_id"], 1, time.time() - 1, "dead-worker")

    # WHEN SQS redelivers the message
    stack.pump()

    # THEN the step runs again and the run completes once
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"] == "success"
    )
    assert len(_ai_messages(stack, thread_id)) == 1


def test_step_that_crashed_after_its_checkpoint_is_not_executed_again(stack: Stack) -> None:
    # GIVEN a worker that ran step 2 (the specialist reply) and died before recording it
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])
    step2 = stack.receive(1)[0][1]
    body = json.loads(step2["Body"])
    stack.store.claim_step(thread_id, run["run_id"], 2, time.time() - 1, "dead-worker")
    graph = load_graph("support", stack.settings)
    config = thread_config(thread_id)
    config["metadata"] = {"run_id": run["run_id"]}
    run_superstep(graph, None, config)
    assert len(_ai_messages(stack, thread_id)) == 1

    # WHEN the step message is redelivered
    stack.sqs.change_message_visibility(
        QueueUrl=stack.queue_urls[priority],
        ReceiptHandle=step2["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    stack.pump()

    # THEN the specialist did not reply twice and the run finished
    assert body["step"] == 2
    assert len(_ai_messages(stack, thread_id)) == 1
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"] == "success"
    )


def test_housekeeping_requeues_a_run_whose_message_was_lost(stack: Stack) -> None:
    # GIVEN a run whose step message was lost and whose lease has expired
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    _, lost = stack.receive(1)[0]
    stack.sqs.delete_message(
        QueueUrl=stack.queue_urls["normal"], ReceiptHandle=lost["ReceiptHandle"]
    )
    stack.store.extend_lease(thread_id, run["run_id"], time.time() - 1)

    # WHEN housekeeping runs and the queues are drained
    result = stack.housekeeping()
    stack.pump()

    # THEN the run was re-queued once and completed
    assert result == {"requeued": 1}
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"] == "success"
    )
    assert stack.housekeeping() == {"requeued": 0}


class _State(TypedDict, total=False):
    n: int


def _graph_raising(exc: Exception) -> registry.GraphFactory:
    def factory(checkpointer: Any, _model: Any) -> Any:
        def ok(state: _State) -> dict[str, int]:
            return {"n": 1}

        def boom(state: _State) -> dict[str, int]:
            raise exc

        builder = StateGraph(_State)
        builder.add_node("ok", ok)
        builder.add_node("boom", boom)
        builder.add_edge(START, "ok")
        builder.add_edge("ok", "boom")
        builder.add_edge("boom", END)
        return builder.compile(checkpointer=checkpointer)

    return factory


def test_node_exception_ends_the_run_in_error(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a graph whose second node raises
    monkeypatch.setitem(registry.GRAPHS, "boom", _graph_raising(ValueError("card declined")))
    thread_id = stack.create_thread()

    # WHEN a run of it is driven
    run = stack.start_run(thread_id, assistant_id="boom", input={"n": 0})
    stack.pump()

    # THEN the run is error with the message, the thread is error, join shows the error
    got = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert got["status"] == "error"
    assert got["error"] == "card declined"
    assert stack.api("GET", f"/threads/{thread_id}").body["status"] == "error"
    joined = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    assert joined == {"__error__": {"error": "ValueError", "message": "card declined"}}


def test_infrastructure_error_is_retried_then_the_run_is_marked_error(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a graph whose node keeps getting throttled by AWS
    throttled = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "Invoke"
    )
    monkeypatch.setitem(registry.GRAPHS, "throttled", _graph_raising(throttled))
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="throttled", input={"n": 0})
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])

    # WHEN the failing step message is delivered over and over
    failures = []
    for _ in range(stack.settings.max_step_attempts):
        priority, message = stack.receive(1)[0]
        failures.append(stack.deliver(priority, [message])["batchItemFailures"])
        status = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"]
        if status != "running":
            break

    # THEN every attempt but the last was reported as a batch item failure (SQS retries it)
    assert [len(f) for f in failures] == [1] * (stack.settings.max_step_attempts - 1) + [0]
    # AND the last allowed attempt ended the run error, saying which step failed how often
    got = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert got["status"] == "error"
    assert "ThrottlingException" in got["error"]
    assert f"Step 2 of run {run['run_id']} failed 5 times" in got["error"]
    # AND the message was consumed, not parked in a DLQ: the run, not SQS, counted attempts
    assert stack.receive(1) == []
    assert stack.api("GET", f"/threads/{thread_id}").body["status"] == "error"


def test_housekeeping_frees_a_thread_left_held_by_an_ended_run(stack: Stack) -> None:
    # GIVEN a run that ended but whose worker died before freeing the thread, and a queued run
    thread_id = stack.create_thread()
    first = stack.start_run(thread_id, input=BILLING)
    second = stack.start_run(thread_id, input=BILLING)
    holder = stack.store.get_run(thread_id, first["run_id"])
    assert holder is not None
    stack.store.record_ending(
        holder,
        "success",
        Ending(thread_status="idle", effects=["thread", "next"]),
        token=None,
        now=time.time(),
        recheck_at=time.time() - 1,
    )
    stack.store.extend_lease(thread_id, second["run_id"], time.time() - 1)

    # WHEN housekeeping runs and the queues are drained
    result = stack.housekeeping()
    stack.pump()

    # THEN the queued run was started and completed
    assert result == {"requeued": 1}
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{second['run_id']}").body["status"]
        == "success"
    )
    assert stack.api("GET", f"/threads/{thread_id}").body["status"] == "idle"


def test_run_with_after_seconds_is_delayed_on_the_queue(stack: Stack) -> None:
    # GIVEN a run asked to start 60 seconds later
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING, after_seconds=60)

    # WHEN the queues are polled now
    waiting = stack.receive(1)

    # THEN its step message is not visible yet and the run is pending
    assert waiting == []
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"] == "pending"
    )

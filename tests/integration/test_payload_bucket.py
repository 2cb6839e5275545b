"""Threads whose checkpoints spill into the payload bucket, through the handlers.

The deployed stack always has a payload bucket; these paths (``list_objects_v2`` before a
delete above all) are what the IAM coverage check (tests/aws_calls.py) must see the API and
the worker make.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from functions import clock
from functions.runs import RunService
from graphs import registry
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

# Random bytes do not deflate: a message this long cannot stay in a 400 KB item.
LARGE = base64.b64encode(os.urandom(520_000)).decode()


def _user(text: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}]}


class _DocState(TypedDict, total=False):
    document: str
    summary: str


def _fetch_large(checkpointer: Any, model: Any) -> Any:
    def fetch(state: _DocState) -> _DocState:
        return {"document": LARGE}

    def summarize(state: _DocState) -> _DocState:
        return {"summary": f"{len(state.get('document', ''))} characters"}

    builder = StateGraph(_DocState)
    builder.add_node("fetch", fetch)
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "fetch")
    builder.add_edge("fetch", "summarize")
    builder.add_edge("summarize", END)
    return builder.compile(checkpointer=checkpointer)


@pytest.fixture
def bucket_stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # A graph whose first step writes a document too large for a DynamoDB item.
    monkeypatch.setitem(registry.GRAPHS, "fetch-large", _fetch_large)
    return Stack(moto_endpoint, payload_bucket=f"payloads-{uuid.uuid4().hex[:10]}")


def _objects(stack: Stack) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.sqs.meta.endpoint_url)
    response = s3.list_objects_v2(Bucket=stack.settings.payload_bucket)
    return [o["Key"] for o in response.get("Contents", [])]


def test_a_thread_with_payloads_in_the_bucket_is_deleted_with_them(bucket_stack: Stack) -> None:
    stack = bucket_stack
    # GIVEN a thread whose state went to the payload bucket (a run's input is kept on its
    # run record, so a state update carries the large value)
    thread_id = stack.create_thread()
    updated = stack.api(
        "POST", f"/threads/{thread_id}/state", {"values": _user(LARGE), "as_node": "__start__"}
    )
    assert updated.status == 200, updated.body
    assert _objects(stack), "the large message was offloaded to S3"
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    assert state["values"]["messages"][0]["content"] == LARGE

    # WHEN the thread is deleted
    deleted = stack.api("DELETE", f"/threads/{thread_id}")

    # THEN it is gone, with every object it had in the bucket
    assert deleted.status == 204
    assert stack.api("GET", f"/threads/{thread_id}").status == 404
    assert _objects(stack) == []


def test_rolling_back_a_threads_first_run_clears_its_payload_prefix(bucket_stack: Stack) -> None:
    stack = bucket_stack
    # GIVEN a thread's first run, one step in
    thread_id = stack.create_thread()
    first = stack.start_run(thread_id, input=_user("I want a refund"))
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])

    # WHEN a new run rolls it back
    second = stack.start_run(thread_id, input=_user("hello"), multitask_strategy="rollback")
    stack.pump()

    # THEN the first run left nothing behind (the thread's prefix was listed and emptied)
    assert stack.api("GET", f"/threads/{thread_id}/runs/{first['run_id']}").status == 404
    values = stack.api("GET", f"/threads/{thread_id}/runs/{second['run_id']}/join").body
    assert [m["content"] for m in values["messages"] if m["type"] == "human"] == ["hello"]
    assert _objects(stack) == []


class _FakeClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def _run_one_step_in(stack: Stack, after_a_finished_run: bool) -> tuple[str, dict[str, Any], str]:
    """A fetch-large run one step in, its output in the bucket (its next step message waits
    in its queue), on a new thread or after a finished run: (thread, run, priority)."""
    thread_id = stack.create_thread()
    if after_a_finished_run:
        stack.start_run(thread_id, assistant_id="fetch-large", input={})
        stack.pump()
    run = stack.start_run(thread_id, assistant_id="fetch-large", input={})
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])
    assert _objects(stack), "the document went to the bucket"
    return thread_id, run, priority


def _rolled_back_properly(stack: Stack, thread_id: str, run_id: str, after_run: bool) -> None:
    assert stack.api("GET", f"/threads/{thread_id}/runs/{run_id}").status == 404
    if not after_run:
        # The thread was empty before: its whole history, payloads included, went.
        assert _objects(stack) == []
    # The rolling-back run (support graph, "hello") ran on what was left.
    values = stack.api("GET", f"/threads/{thread_id}/state").body["values"]
    assert [m["content"] for m in values["messages"] if m["type"] == "human"] == ["hello"]


RECOVERED = pytest.mark.parametrize(
    "after_run", [False, True], ids=["first-run-of-a-thread", "after-a-finished-run"]
)


def _rollback_dies_in_the_api(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, thread_id: str
) -> None:
    with monkeypatch.context() as patch:

        def died(self: RunService, run: Any) -> None:
            raise RuntimeError("the API function died here")

        patch.setattr(RunService, "_roll_back", died)
        reply = stack.api(
            "POST",
            f"/threads/{thread_id}/runs",
            {"assistant_id": "support", "input": _user("hello"), "multitask_strategy": "rollback"},
        )
    assert reply.status == 500


@RECOVERED
def test_housekeeping_finishes_a_rollback_the_api_left_unfinished(
    bucket_stack: Stack, monkeypatch: pytest.MonkeyPatch, after_run: bool
) -> None:
    stack = bucket_stack
    fake = _FakeClock()
    monkeypatch.setattr(clock, "now", fake.now)
    # GIVEN a run one step in, its output in the bucket
    thread_id, first, priority = _run_one_step_in(stack, after_run)
    # AND a run rolling it back, whose API call died once the ending was recorded
    _rollback_dies_in_the_api(stack, monkeypatch, thread_id)
    assert [priority for priority, _ in stack.receive(10)] == [priority]
    stack.sqs.purge_queue(QueueUrl=stack.queue_urls[priority])  # the worker never gets it

    # WHEN housekeeping runs after the deadline, and the queues are drained
    fake.offset += stack.settings.lease_s + 1
    stack.housekeeping()
    stack.pump()

    # THEN the rolled-back run is gone, with its checkpoints and payloads
    _rolled_back_properly(stack, thread_id, first["run_id"], after_run)


@RECOVERED
def test_the_next_step_message_finishes_a_rollback_the_api_left_unfinished(
    bucket_stack: Stack, monkeypatch: pytest.MonkeyPatch, after_run: bool
) -> None:
    stack = bucket_stack
    # GIVEN a run one step in, its output in the bucket (its next step message waits)
    thread_id, first, _priority = _run_one_step_in(stack, after_run)
    # AND a run rolling it back, whose API call died once the ending was recorded
    _rollback_dies_in_the_api(stack, monkeypatch, thread_id)

    # WHEN the worker gets the first run's next step message
    stack.pump()

    # THEN it finished the ending: the run is gone, its checkpoints and payloads too
    _rolled_back_properly(stack, thread_id, first["run_id"], after_run)


def test_a_run_continues_a_thread_whose_state_is_in_the_bucket(bucket_stack: Stack) -> None:
    stack = bucket_stack
    # GIVEN a thread whose state went to the payload bucket
    thread_id = stack.create_thread()
    updated = stack.api(
        "POST", f"/threads/{thread_id}/state", {"values": _user(LARGE), "as_node": "__start__"}
    )
    assert updated.status == 200, updated.body

    # WHEN a run continues the conversation
    run = stack.start_run(thread_id, input=_user("I want a refund"))
    stack.pump()

    # THEN it ran on the whole state: the large message is still the first
    values = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    assert values["messages"][0]["content"] == LARGE
    assert values["messages"][1]["content"] == "I want a refund"


def test_a_node_output_too_large_for_an_item_goes_to_the_bucket(
    bucket_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = bucket_stack
    # GIVEN a graph whose node returns a document larger than a DynamoDB item
    thread_id = stack.create_thread()

    # WHEN it runs on the worker
    run = stack.start_run(thread_id, assistant_id="fetch-large", input={})
    stack.pump()

    # THEN the document was stored in the bucket and reads back whole
    assert _objects(stack)
    values = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    assert values["document"] == LARGE


def _echo_document(checkpointer: Any, model: Any) -> Any:
    def read(state: _DocState) -> _DocState:
        return {"summary": f"{len(state.get('document', ''))} characters"}

    builder = StateGraph(_DocState)
    builder.add_node("read", read)
    builder.add_edge(START, "read")
    builder.add_edge("read", END)
    return builder.compile(checkpointer=checkpointer)


@pytest.mark.parametrize("size", [600_000, 1_000_000])
def test_a_run_whose_input_is_larger_than_an_item_runs(
    bucket_stack: Stack, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    stack = bucket_stack
    monkeypatch.setitem(registry.GRAPHS, "echo-document", _echo_document)
    # GIVEN a document of incompressible text, too large for a DynamoDB item, and under the
    # API's 1 MiB body limit with the rest of the body
    document = base64.b64encode(os.urandom(size * 3 // 4)).decode()[: size - 200]
    thread_id = stack.create_thread()
    # WHEN a run is created with it as input
    reply = stack.api(
        "POST",
        f"/threads/{thread_id}/runs",
        {"assistant_id": "echo-document", "input": {"document": document}},
    )
    # THEN the run is created (no 413) and its record refers to the input in the bucket
    assert reply.status == 200, reply.body
    run_id = reply.body["run_id"]
    stored = reply.body["kwargs"]["input"]
    assert stored["bytes"] > 400_000
    assert stored["$lambdagraph_payload"] in _objects(stack)
    # AND the graph gets the whole document
    stack.pump()
    run = stack.api("GET", f"/threads/{thread_id}/runs/{run_id}").body
    assert run["status"] == "success", run
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    assert state["values"]["document"] == document
    assert state["values"]["summary"] == f"{len(document)} characters"
    # AND deleting the thread deletes the input too
    assert stack.api("DELETE", f"/threads/{thread_id}").status == 204
    assert _objects(stack) == []


def test_a_rolled_back_runs_large_input_goes_with_it(
    bucket_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = bucket_stack
    monkeypatch.setitem(registry.GRAPHS, "echo-document", _echo_document)
    document = base64.b64encode(os.urandom(450_000)).decode()
    thread_id = stack.create_thread()
    first = stack.start_run(thread_id, assistant_id="echo-document", input={"document": document})
    # WHEN a second run rolls the first back before it ran
    second = stack.start_run(thread_id, input=_user("hello"), multitask_strategy="rollback")
    stack.pump()
    # THEN the first run and its stored input are gone; the second ran
    assert stack.api("GET", f"/threads/{thread_id}/runs/{first['run_id']}").status == 404
    assert stack.api("GET", f"/threads/{thread_id}/runs/{second['run_id']}").body["status"] == (
        "success"
    )
    assert not [k for k in _objects(stack) if k.startswith("runs/")]

"""An ending left unfinished by a crashed step worker is finished by whichever function meets
it next: here the API (a run created on the held thread) and the approval notifier (the
resuming run of an approval, on a thread held by a later run). Whoever finishes it, and
however many do, the reviewer gets one approval (one execution, one email) and the run's
receiver one webhook. The notifier also finishes a rollback ending (the rolling-back
process died): the thread's state is restored and the run deleted.

These are the paths on which the API and the notifier call ``states:StartExecution`` and
``events:PutEvents`` (and the notifier reads and writes checkpoints: infra/permissions.py): the AWS calls they record here are what
``tests/infra/test_iam_coverage.py`` checks their roles against.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict

from functions import aws
from functions.checkpointer import make_checkpointer
from functions.executor import thread_config
from functions.graph_loader import load_graph
from graphs import registry
from tests.integration.approval_stack import ApprovalStack, enable_execution
from tests.integration.test_approvals import LINK
from tests.integration.test_payload_bucket import LARGE
from tests.integration.test_run_endings import FailAws
from tests.integration.test_webhooks import WebhookStack
from tests.integration.webhook_receiver import Receiver, webhook_receiver

pytestmark = pytest.mark.integration

REFUND = {"messages": [{"role": "user", "content": "I was charged twice, please refund $49"}]}
BILLING = {"messages": [{"role": "user", "content": "I want a refund"}]}


class EndingStack(WebhookStack, ApprovalStack):
    """Approvals (state machine, notifier, SES) and webhooks (bus, rule, sender) together:
    every effect of an approval ending is observable."""


@pytest.fixture
def estack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[EndingStack]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("MOTO_PORT", moto_endpoint.rsplit(":", 1)[1])
    enable_execution(moto_endpoint)
    # As deployed: with a payload bucket (large checkpoint values spill into it).
    stack = EndingStack(moto_endpoint, payload_bucket=f"payloads-{uuid.uuid4().hex[:10]}")
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as found:
        yield found


def _releases_thread(params: dict[str, Any]) -> bool:
    key = params.get("Key", {}).get("sk")
    sk = key.get("S") if isinstance(key, dict) else key
    return sk == "THREAD" and "REMOVE active_run_id" in params.get("UpdateExpression", "")


def _run_to_a_crashed_ending(
    stack: EndingStack, thread_id: str, run_id: str
) -> tuple[str, dict[str, Any]]:
    """Deliver the run's steps until one ends it, with every attempt at the thread's release
    failing there (the worker records the outcome, then dies before any effect of the
    ending). The step message of that attempt is taken off the queue and returned (SQS
    would hand it back only after its visibility timeout): (priority, message)."""
    injector = FailAws()
    injector.attach(aws.events_client())
    injector.fail("UpdateItem", times=100, when=_releases_thread)
    try:
        for _ in range(10):
            batch = stack.receive(max_messages=1)
            assert batch, "the run's step messages ran out before it ended"
            priority, message = batch[0]
            stack.deliver(priority, [message])
            record = stack.store.get_run(thread_id, run_id)
            assert record is not None
            if not record.active:
                break
        else:
            raise AssertionError("the run did not end")
    finally:
        injector.detach()
    # The failed attempt's message, made visible again by ``deliver``: the crashed worker's.
    held = stack.receive(max_messages=10)
    assert len(held) == 1, held
    record = stack.store.get_run(thread_id, run_id)
    assert record is not None
    assert record.ending is not None
    assert record.ending.effects == ["thread", "approval", "next", "event"]
    assert stack.store.get_thread(thread_id).active_run_id == run_id  # type: ignore[union-attr]
    return held[0]


def _approvals(stack: EndingStack, thread_id: str) -> list[dict[str, Any]]:
    reply = stack.api("GET", f"/threads/{thread_id}/approvals")
    assert reply.status == 200, reply.body
    return list(reply.body)


def _approval_of(stack: EndingStack, thread_id: str, run_id: str) -> dict[str, Any]:
    [approval] = [a for a in _approvals(stack, thread_id) if a["run_id"] == run_id]
    return approval


def _executions(stack: EndingStack, name: str) -> list[dict[str, Any]]:
    executions = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
    return [e for e in executions if e["name"] == name]


def _emails_for(stack: EndingStack, approval_id: str) -> list[dict[str, Any]]:
    return [e for e in stack.emails_to(stack.reviewer) if f"/approvals/{approval_id}?" in e["text"]]


def _webhooks_for(receiver: Receiver, run_id: str) -> list[dict[str, Any]]:
    return [r.payload for r in receiver.received if r.payload.get("run_id") == run_id]


def _everyone_else_meets_the_ending(stack: EndingStack, held: tuple[str, dict[str, Any]]) -> None:
    """The crashed worker's message comes back, housekeeping passes, every queue drains."""
    stack.deliver(held[0], [held[1]])
    stack.housekeeping()
    stack.pump()
    stack.deliver_webhooks()


def test_the_api_finishes_an_approval_ending_a_crashed_worker_left(
    estack: EndingStack, receiver: Receiver
) -> None:
    stack = estack
    # GIVEN a refund run that stopped for approval, whose worker recorded the outcome and
    # died before its ending's effects: the thread is still held, no approval exists yet
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=REFUND, webhook=receiver.url)
    held = _run_to_a_crashed_ending(stack, thread_id, run["run_id"])
    assert _approvals(stack, thread_id) == []
    assert stack.deliver_webhooks() == 0

    # WHEN a client creates a run on the thread (the API meets the unfinished ending)
    queued = stack.start_run(thread_id, input=BILLING, multitask_strategy="enqueue")

    # THEN the API finished it before answering: the approval is stored and its execution
    # started, the run-ended event put (one delivery on the queue), the thread released and
    # the new run started
    approval = _approval_of(stack, thread_id, run["run_id"])
    assert approval["status"] == "pending"
    assert [e["status"] for e in _executions(stack, approval["approval_id"])] == ["RUNNING"]
    assert stack.deliver_webhooks() == 1
    [webhook] = _webhooks_for(receiver, run["run_id"])
    assert webhook["status"] == "success"
    record = stack.store.get_run(thread_id, run["run_id"])
    assert record is not None
    assert record.ending is None
    assert stack.store.get_run(thread_id, queued["run_id"]).queued is False  # type: ignore[union-attr]

    # WHEN the state machine asks for the emails, and everyone else meets the ending too
    stack.pump_approvals("request")
    _everyone_else_meets_the_ending(stack, held)

    # THEN one approval (one execution, one email) and one webhook, however many finished it
    assert len(_executions(stack, approval["approval_id"])) == 1
    assert len(_emails_for(stack, approval["approval_id"])) == 1
    assert len(_webhooks_for(receiver, run["run_id"])) == 1
    assert [a["run_id"] for a in _approvals(stack, thread_id)] == [run["run_id"]]
    assert stack.api("GET", f"/threads/{thread_id}/runs/{queued['run_id']}").body["status"] == (
        "success"
    )


def test_the_notifier_finishes_an_approval_ending_a_crashed_worker_left(
    estack: EndingStack, receiver: Receiver
) -> None:
    stack = estack
    # GIVEN a thread that stopped for approval, its reviewer emailed
    thread_id = stack.create_thread()
    first = stack.start_run(thread_id, input=REFUND)
    stack.pump()
    first_approval = _approval_of(stack, thread_id, first["run_id"])
    stack.pump_approvals("request")
    [email] = _emails_for(stack, first_approval["approval_id"])
    # AND a later run on the thread (a new request, not a resume) that stopped for approval
    # too, whose worker recorded the outcome and died before its ending's effects
    second = stack.start_run(thread_id, input=REFUND, webhook=receiver.url)
    held = _run_to_a_crashed_ending(stack, thread_id, second["run_id"])
    assert [a["run_id"] for a in _approvals(stack, thread_id)] == [first["run_id"]]

    # WHEN the reviewer approves the first request and the state machine hands the resume to
    # the notifier (its resuming run meets the held thread and the unfinished ending)
    [url] = LINK.findall(email["text"])
    token = unquote(url.split("token=", 1)[1])
    decided = stack.open(url.split("?")[0], data={"token": token, "decision": "approve"})
    assert decided.status == 200, decided.body
    [resume] = stack.pump_approvals("resume")
    assert resume["approval_id"] == first_approval["approval_id"]

    # THEN the notifier finished the second run's ending: its approval stored and started,
    # its run-ended event put, the thread released and the resuming run started
    approval = _approval_of(stack, thread_id, second["run_id"])
    assert approval["status"] == "pending"
    assert [e["status"] for e in _executions(stack, approval["approval_id"])] == ["RUNNING"]
    assert stack.deliver_webhooks() == 1
    [webhook] = _webhooks_for(receiver, second["run_id"])
    assert webhook["status"] == "success"
    record = stack.store.get_run(thread_id, second["run_id"])
    assert record is not None
    assert record.ending is None
    resumed = [
        r
        for r in stack.store.list_runs(thread_id)
        if r.metadata.get("approval_id") == first_approval["approval_id"]
    ]
    assert [r.queued for r in resumed] == [False]

    # WHEN the state machine asks for the emails, and everyone else meets the ending too
    stack.pump_approvals("request")
    _everyone_else_meets_the_ending(stack, held)

    # THEN one approval (one execution, one email) and one webhook, however many finished it
    assert len(_executions(stack, approval["approval_id"])) == 1
    assert len(_emails_for(stack, approval["approval_id"])) == 1
    assert len(_webhooks_for(receiver, second["run_id"])) == 1
    assert len(_emails_for(stack, first_approval["approval_id"])) == 1
    assert _approval_of(stack, thread_id, first["run_id"])["status"] == "approved"


class _DocState(TypedDict, total=False):
    request: str
    decision: Any
    document: str
    summary: str


def _publishing(checkpointer: Any, model: Any) -> Any:
    """A graph that asks for approval (``request`` "ask"), or fetches a document too large for
    a checkpoint item and summarizes it in a second step (any other request)."""

    def ask(state: _DocState) -> _DocState:
        decision = interrupt({"type": "approval", "summary": "Publish the document"})
        return {"decision": decision}

    def fetch(state: _DocState) -> _DocState:
        return {"document": LARGE}

    def summarize(state: _DocState) -> _DocState:
        return {"summary": f"{len(state.get('document', ''))} characters"}

    builder = StateGraph(_DocState)
    builder.add_node("ask", ask)
    builder.add_node("fetch", fetch)
    builder.add_node("summarize", summarize)
    builder.add_conditional_edges(
        START, lambda state: "ask" if state.get("request") == "ask" else "fetch", ["ask", "fetch"]
    )
    builder.add_edge("ask", END)
    builder.add_edge("fetch", "summarize")
    builder.add_edge("summarize", END)
    return builder.compile(checkpointer=checkpointer)


def _values(stack: EndingStack, assistant: str, thread_id: str) -> dict[str, Any]:
    """The thread's values as its checkpoints hold them (messages as their text)."""
    values = dict(load_graph(assistant, stack.settings).get_state(thread_config(thread_id)).values)
    if "messages" in values:
        values["messages"] = [str(m.content) for m in values["messages"]]
    return values


@pytest.mark.parametrize(
    ("assistant", "asks", "then"),
    [
        pytest.param("support", REFUND, BILLING, id="checkpoints-in-the-table"),
        # The rolled-back run's checkpoints spilled into the payload bucket: reading them
        # back reads its objects.
        pytest.param("publishing", {"request": "ask"}, {"request": "fetch"}, id="spilled"),
    ],
)
def test_the_notifier_finishes_a_rollback_ending_left_unfinished(
    estack: EndingStack,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    assistant: str,
    asks: dict[str, Any],
    then: dict[str, Any],
) -> None:
    stack = estack
    monkeypatch.setitem(registry.GRAPHS, "publishing", _publishing)
    # GIVEN a thread that stopped for approval, its reviewer emailed
    thread_id = stack.create_thread()
    first = stack.start_run(thread_id, assistant_id=assistant, input=asks)
    stack.pump()
    first_approval = _approval_of(stack, thread_id, first["run_id"])
    stack.pump_approvals("request")
    [email] = _emails_for(stack, first_approval["approval_id"])
    # (read past the API: GET /threads/{id}/state would cancel the pending approval)
    before = _values(stack, assistant, thread_id)
    # AND a later run on the thread, between two steps (its next step message waits)
    second = stack.start_run(thread_id, assistant_id=assistant, input=then, webhook=receiver.url)
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])
    [held] = stack.receive(10)
    assert stack.store.get_run(thread_id, second["run_id"]).active  # type: ignore[union-attr]
    assert _values(stack, assistant, thread_id) != before
    # AND a run created with the rollback strategy, whose process died in the rollback (the
    # checkpoint write failed): the second run is ended, its ending not begun, the thread held
    injector = FailAws()
    injector.attach(make_checkpointer(stack.settings).client)
    injector.fail("PutItem", times=100)
    try:
        reply = stack.api(
            "POST",
            f"/threads/{thread_id}/runs",
            {"assistant_id": assistant, "input": then, "multitask_strategy": "rollback"},
        )
    finally:
        injector.detach()
    assert reply.status >= 500, reply.body
    record = stack.store.get_run(thread_id, second["run_id"])
    assert record is not None
    assert record.ending is not None
    assert record.ending.effects == ["rollback", "thread", "next", "event", "delete"]
    assert stack.store.get_thread(thread_id).active_run_id == second["run_id"]  # type: ignore[union-attr]

    # WHEN the reviewer approves and the notifier creates the resuming run on the held thread
    [url] = LINK.findall(email["text"])
    token = unquote(url.split("token=", 1)[1])
    decided = stack.open(url.split("?")[0], data={"token": token, "decision": "approve"})
    assert decided.status == 200, decided.body
    stack.pump_approvals("resume")

    # THEN the notifier finished the rolled-back run's ending: the thread's state is back to
    # where that run started, the run is deleted, its run-ended event put
    assert stack.store.get_run(thread_id, second["run_id"]) is None
    assert _values(stack, assistant, thread_id) == before
    assert stack.deliver_webhooks() == 1
    [webhook] = _webhooks_for(receiver, second["run_id"])
    assert webhook["status"] == "interrupted"

    # WHEN everyone else meets the ending too
    _everyone_else_meets_the_ending(stack, held)
    # THEN still one webhook
    assert len(_webhooks_for(receiver, second["run_id"])) == 1

"""Interrupts and resume, cancellation, multitask strategies, time travel."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def _user(text: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}]}


CANCEL = _user("Please cancel my account")
BILLING = _user("I want a refund")


def test_interrupt_then_resume_with_command(stack: Stack) -> None:
    # GIVEN a run that reaches the human-escalation interrupt
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=CANCEL)
    stack.pump()

    # THEN the run succeeded, the thread is interrupted, and join/state show the interrupt
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"] == "success"
    )
    thread = stack.api("GET", f"/threads/{thread_id}").body
    assert thread["status"] == "interrupted"
    joined = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    assert joined["__interrupt__"][0]["value"]["type"] == "approval"
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    assert state["next"] == ["escalate"]
    assert state["tasks"][0]["interrupts"][0]["value"]["action"] == "cancel_account"
    assert state["interrupts"][0]["id"] == joined["__interrupt__"][0]["id"]

    # WHEN a new run resumes it with command.resume
    resumed = stack.start_run(
        thread_id, command={"resume": {"decision": "approve", "approved": True}}
    )
    stack.pump()

    # THEN the graph continues past the interrupt to the end
    values = stack.api("GET", f"/threads/{thread_id}/runs/{resumed['run_id']}/join").body
    assert values["messages"][-1]["content"].startswith("A colleague approved it")
    assert stack.api("GET", f"/threads/{thread_id}").body["status"] == "idle"


def test_cancel_takes_effect_at_the_next_step_boundary(stack: Stack) -> None:
    # GIVEN a run whose first step has run
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])

    # WHEN it is cancelled and the next step message arrives
    reply = stack.api("POST", f"/threads/{thread_id}/runs/{run['run_id']}/cancel")
    stack.pump()

    # THEN the run is interrupted without running further steps and the thread is free
    assert reply.status == 202
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"]
        == "interrupted"
    )
    assert stack.api("GET", f"/threads/{thread_id}/state").body["next"] == ["billing"]
    assert stack.api("GET", f"/threads/{thread_id}").body["status"] == "idle"


def test_cancel_of_a_pending_run_ends_it_at_once(stack: Stack) -> None:
    # GIVEN a run no worker has picked up
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)

    # WHEN it is cancelled with wait=1
    reply = stack.api(
        "POST", f"/threads/{thread_id}/runs/{run['run_id']}/cancel", query={"wait": "1"}
    )

    # THEN it is interrupted, and its queued step message is dropped
    assert reply.status == 200
    assert reply.body["status"] == "interrupted"
    assert stack.pump() == 1
    assert stack.api("GET", f"/threads/{thread_id}/state").body["values"] == {}


def test_multitask_reject_answers_409(stack: Stack) -> None:
    # GIVEN a thread with an active run
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)

    # WHEN another run is created with multitask_strategy=reject
    reply = stack.api(
        "POST",
        f"/threads/{thread_id}/runs",
        {"assistant_id": "support", "input": BILLING, "multitask_strategy": "reject"},
    )

    # THEN it is refused with 409 and a detail
    assert reply.status == 409
    assert "active run" in reply.body["detail"]


def test_multitask_enqueue_runs_one_after_another(stack: Stack) -> None:
    # GIVEN a thread with an active run
    thread_id = stack.create_thread()
    first = stack.start_run(thread_id, input=BILLING)

    # WHEN a second run is enqueued (the default) and the queues are drained
    second = stack.start_run(thread_id, input=_user("there is a bug"))
    assert second["status"] == "pending"
    stack.pump()

    # THEN both ran, in order: the second saw the first's messages
    for run in (first, second):
        assert (
            stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"]
            == "success"
        )
    values = stack.api("GET", f"/threads/{thread_id}/runs/{second['run_id']}/join").body
    assert [m["type"] for m in values["messages"]] == ["human", "ai", "human", "ai"]


def test_multitask_interrupt_stops_the_active_run_and_starts_the_new_one(stack: Stack) -> None:
    # GIVEN a run whose first step has run
    thread_id = stack.create_thread()
    first = stack.start_run(thread_id, input=BILLING)
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])

    # WHEN a new run arrives with multitask_strategy=interrupt
    second = stack.start_run(thread_id, input=_user("hello"), multitask_strategy="interrupt")
    stack.pump()

    # THEN the first is interrupted at its step boundary and the second completes after it
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{first['run_id']}").body["status"]
        == "interrupted"
    )
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{second['run_id']}").body["status"]
        == "success"
    )


def test_multitask_rollback_removes_the_active_run_and_its_effect(stack: Stack) -> None:
    # GIVEN a run whose first step has run
    thread_id = stack.create_thread()
    first = stack.start_run(thread_id, input=BILLING)
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])

    # WHEN a new run arrives with multitask_strategy=rollback
    second = stack.start_run(thread_id, input=_user("hello"), multitask_strategy="rollback")
    stack.pump()

    # THEN the first run is gone and the state holds only the second run's conversation
    assert stack.api("GET", f"/threads/{thread_id}/runs/{first['run_id']}").status == 404
    values = stack.api("GET", f"/threads/{thread_id}/runs/{second['run_id']}/join").body
    assert [m["content"] for m in values["messages"] if m["type"] == "human"] == ["hello"]


def test_time_travel_forks_from_an_earlier_checkpoint(stack: Stack) -> None:
    # GIVEN a finished billing run
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    stack.pump()
    history = stack.api("POST", f"/threads/{thread_id}/history", {"limit": 10}).body
    before_classify = next(s for s in history if s["next"] == ["classify"])

    # WHEN the state before classify is edited and a run restarts from there
    edited = stack.api(
        "POST",
        f"/threads/{thread_id}/state",
        {
            "values": {"messages": [{"role": "user", "content": "my connection keeps dropping"}]},
            "checkpoint_id": before_classify["checkpoint"]["checkpoint_id"],
            "as_node": "__start__",
        },
    )
    run = stack.start_run(
        thread_id, input=None, checkpoint_id=edited.body["checkpoint"]["checkpoint_id"]
    )
    stack.pump()

    # THEN the fork took the technical route and became the thread's head
    values = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    assert values["route"] == "technical:done"
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    assert state["values"]["route"] == "technical:done"


def test_get_state_at_a_checkpoint(stack: Stack) -> None:
    # GIVEN a finished run
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    stack.pump()
    history = stack.api("POST", f"/threads/{thread_id}/history", {"limit": 10}).body

    # WHEN the state at an older checkpoint is read
    old = history[2]
    state = stack.api(
        "GET", f"/threads/{thread_id}/state/{old['checkpoint']['checkpoint_id']}"
    ).body

    # THEN it is that checkpoint
    assert state["checkpoint"] == old["checkpoint"]
    assert state["next"] == old["next"]


def test_rollback_returns_the_thread_to_where_the_rolled_back_run_started(stack: Stack) -> None:
    # GIVEN a thread with one finished run and a second run one step in
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    stack.pump()
    second = stack.start_run(thread_id, input=_user("there is a bug"))
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])

    # WHEN a third run arrives with multitask_strategy=rollback
    third = stack.start_run(thread_id, input=_user("hello"), multitask_strategy="rollback")
    stack.pump()

    # THEN the second run left no trace: the conversation is run 1 then run 3
    assert stack.api("GET", f"/threads/{thread_id}/runs/{second['run_id']}").status == 404
    values = stack.api("GET", f"/threads/{thread_id}/runs/{third['run_id']}/join").body
    humans = [m["content"] for m in values["messages"] if m["type"] == "human"]
    assert humans == ["I want a refund", "hello"]

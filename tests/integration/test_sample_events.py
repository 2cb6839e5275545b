"""The sample events in ``events/`` drive the real handlers as Lambda would."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.handlers import api, housekeeping, step_worker
from tests.integration.conftest import LambdaContext, Stack, load_event

pytestmark = pytest.mark.integration


def _with_ids(name: str, thread_id: str, run_id: str = "") -> dict[str, Any]:
    text = json.dumps(load_event(name)).replace("THREAD_ID", thread_id).replace("RUN_ID", run_id)
    return dict(json.loads(text))


def test_sample_events_take_a_run_from_creation_to_its_state(stack: Stack) -> None:
    # GIVEN the sample create-thread event
    created = api.handler(
        load_event("api_create_thread.json"), LambdaContext(), services=stack.services
    )
    thread_id = json.loads(created["body"])["thread_id"]

    # WHEN the sample create-run event is sent, its step messages are pumped, and the
    # sample join and get-state events are sent
    reply = api.handler(
        _with_ids("api_create_run.json", thread_id), LambdaContext(), services=stack.services
    )
    run = json.loads(reply["body"])
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])
    stack.pump()
    joined = api.handler(
        _with_ids("api_join_run.json", thread_id, run["run_id"]),
        LambdaContext(),
        services=stack.services,
    )
    state = api.handler(
        _with_ids("api_get_state.json", thread_id), LambdaContext(), services=stack.services
    )

    # THEN the run was accepted on the priority it asked for (high) and ended with a billing reply
    assert reply["statusCode"] == 200
    assert run["metadata"]["source"] == "sample"
    assert priority == "high"
    assert json.loads(joined["body"])["messages"][-1]["content"].startswith("Billing here")
    assert json.loads(state["body"])["values"]["route"] == "billing:done"


def test_sample_cancel_event(stack: Stack) -> None:
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input={"messages": []})
    reply = api.handler(
        _with_ids("api_cancel_run.json", thread_id, run["run_id"]),
        LambdaContext(),
        services=stack.services,
    )
    assert reply["statusCode"] == 202
    assert (
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body["status"]
        == "interrupted"
    )


def test_sample_sqs_event_for_an_unknown_run_is_dropped_not_failed(stack: Stack) -> None:
    # WHEN the sample SQS event names a run that does not exist
    result = step_worker.handler(
        load_event("sqs_step_message.json"), LambdaContext(), worker=stack.worker
    )
    # THEN it is consumed (no batch item failure): there is nothing to retry
    assert result == {"batchItemFailures": []}


def test_sample_scheduled_event_runs_housekeeping(stack: Stack) -> None:
    result = housekeeping.handler(
        load_event("housekeeping_scheduled.json"), LambdaContext(), runs=stack.runs
    )
    assert result == {"requeued": 0}


def test_swagger_ui_is_served(stack: Stack) -> None:
    event = load_event("api_get_state.json")
    event["path"] = "/docs"
    reply = api.handler(event, LambdaContext(), services=stack.services)
    assert reply["statusCode"] == 200
    assert "swagger" in reply["body"].lower()

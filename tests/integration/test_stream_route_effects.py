"""The stream routes create runs as ``POST /threads/{tid}/runs`` does, so they have the same
effects on a thread: a busy thread's multitask strategies (a rollback reads, restores or
deletes checkpoints, their spilled objects among them, and deletes the run record), the
holder's unfinished ending (its approval started, its run-ended event put), a client's resume
settling the thread's pending approval (``SendTaskSuccess``), a stateless run's new thread.

Each request goes through ``functions.handlers.stream.serve``, the stream function's entry
(``STREAM_FUNCTION.entry``): the AWS calls recorded here are what
``tests/infra/test_iam_coverage.py`` holds the stream function's grants to
(infra/permissions.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.handlers.stream import serve
from functions.streaming.http import Answer, StreamServices
from functions.streaming.log import StreamLog
from graphs import registry
from tests.integration.conftest import KEY_A, Stack
from tests.integration.test_ending_finishers import (
    BILLING,
    REFUND,
    EndingStack,
    _approval_of,
    _executions,
    _publishing,
    _run_to_a_crashed_ending,
    _values,
    _webhooks_for,
    estack,
    receiver,
)
from tests.integration.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

__all__ = ["estack", "receiver"]  # the fixtures, shared with test_ending_finishers


def _services(stack: Stack) -> StreamServices:
    return StreamServices(
        threads=stack.services.threads,
        runs=stack.runs,
        log=StreamLog(stack.settings.runtime_table),
    )


def _stream(stack: Stack, path: str, body: dict[str, Any]) -> tuple[Answer, dict[str, str]]:
    """POST a stream route as the stream function serves it; its first event is read and the
    stream closed (the run goes on: ``on_disconnect`` is ``continue``)."""
    answer = serve(
        "POST", path, {"x-api-key": KEY_A}, json.dumps(body).encode(), services=_services(stack)
    )
    assert answer is not None
    first = next(answer.body)
    close = getattr(answer.body, "close", None)
    if callable(close):
        close()
    assert answer.status == 200, first
    assert first.startswith(b"event: metadata\r\n"), first
    return answer, dict(answer.headers)


def _run_id(headers: dict[str, str]) -> str:
    return headers["Content-Location"].rsplit("/", 1)[1]


def test_a_stream_route_finishes_an_approval_ending_a_crashed_worker_left(
    estack: EndingStack, receiver: Receiver
) -> None:
    stack = estack
    # GIVEN a refund run stopped for approval whose worker died before its ending's effects
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=REFUND, webhook=receiver.url)
    _run_to_a_crashed_ending(stack, thread_id, run["run_id"])

    # WHEN a client streams a new run on the held thread
    _, headers = _stream(
        stack,
        f"/threads/{thread_id}/runs/stream",
        {"assistant_id": "support", "input": BILLING, "multitask_strategy": "enqueue"},
    )

    # THEN the stream function finished the ending first: the approval stored and its
    # execution started, the run-ended event put, the new run started
    approval = _approval_of(stack, thread_id, run["run_id"])
    assert [e["status"] for e in _executions(stack, approval["approval_id"])] == ["RUNNING"]
    assert stack.deliver_webhooks() == 1
    assert len(_webhooks_for(receiver, run["run_id"])) == 1
    queued = stack.store.get_run(thread_id, _run_id(headers))
    assert queued is not None
    assert queued.queued is False


@pytest.mark.parametrize("earlier_run", [False, True], ids=["first-run", "later-run"])
def test_a_stream_route_rolls_back_the_active_run(
    estack: EndingStack, monkeypatch: pytest.MonkeyPatch, earlier_run: bool
) -> None:
    stack = estack
    monkeypatch.setitem(registry.GRAPHS, "publishing", _publishing)
    thread_id = stack.create_thread()
    before: dict[str, Any] = {}
    if earlier_run:
        # GIVEN (later-run) a thread with a finished run: the rollback restores its state
        stack.start_run(thread_id, assistant_id="publishing", input={"request": "fetch"})
        stack.pump()
        before = _values(stack, "publishing", thread_id)
    # AND a run between two steps that fetched a document too large for a checkpoint item
    active = stack.start_run(thread_id, assistant_id="publishing", input={"request": "fetch"})
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])
    assert stack.store.get_run(thread_id, active["run_id"]).active  # type: ignore[union-attr]

    # WHEN a client streams a run with the rollback strategy
    _stream(
        stack,
        f"/threads/{thread_id}/runs/stream",
        {
            "assistant_id": "publishing",
            "input": {"request": "ask"},
            "multitask_strategy": "rollback",
        },
    )

    # THEN the active run is rolled back: its record deleted, the thread's state back to
    # what it was before it (none at all for a thread's first run)
    assert stack.store.get_run(thread_id, active["run_id"]) is None
    assert _values(stack, "publishing", thread_id).get("document") == before.get("document")


def test_a_streamed_resume_settles_the_pending_approval(estack: EndingStack) -> None:
    stack = estack
    # GIVEN a thread stopped for approval, its execution waiting with a task token
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=REFUND)
    stack.pump()
    approval = _approval_of(stack, thread_id, run["run_id"])
    stack.pump_approvals("request")

    # WHEN the client resumes the thread itself through a stream route
    _stream(
        stack,
        f"/threads/{thread_id}/runs/stream",
        {"assistant_id": "support", "command": {"resume": {"approved": True}}},
    )

    # THEN the approval is settled by the API's way and its execution completed
    settled = _approval_of(stack, thread_id, run["run_id"])
    assert settled["status"] == "approved"
    [execution] = _executions(stack, approval["approval_id"])
    assert execution["status"] == "SUCCEEDED"


def test_a_stateless_stream_and_a_join_read_what_they_need(stack: Stack) -> None:
    # WHEN a client streams a run on no thread
    _, headers = _stream(stack, "/runs/stream", {"assistant_id": "support", "input": BILLING})
    # THEN it got a new thread (stateless), and joining the run's stream after it ended
    # gives its events through the end
    thread_id = headers["Content-Location"].split("/")[2]
    thread = stack.store.get_thread(thread_id)
    assert thread is not None
    assert thread.metadata.get("stateless") is True
    stack.pump()
    joined = serve(
        "GET",
        headers["Location"],
        {"x-api-key": KEY_A},
        b"",
        services=_services(stack),
    )
    assert joined is not None
    assert joined.status == 200
    body = b"".join(joined.body)
    assert body.startswith(b"event: metadata\r\n")
    assert b"event: values\r\n" in body


def test_the_stream_server_lambda_web_adapter_fronts_streams_chunked(stack: Stack) -> None:
    import http.client
    import threading

    from functions.handlers.stream import make_server
    from functions.resources import STREAM_READINESS_PATH

    # GIVEN the stream function's web server, as run_stream.sh starts it under the adapter
    server = make_server(0, services=_services(stack))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    try:
        connection = http.client.HTTPConnection(str(host), port, timeout=10)
        # WHEN the adapter checks readiness THEN it is ready
        connection.request("GET", STREAM_READINESS_PATH)
        ready = connection.getresponse()
        assert (ready.status, ready.read()) == (200, b'{"ok":true}')
        # WHEN a path that is not a stream route comes THEN 404 in the API's shape
        connection.request("GET", "/threads")
        other = connection.getresponse()
        assert other.status == 404
        assert json.loads(other.read()) == {"detail": "Not a stream route."}
        # WHEN a stream route comes THEN the SSE answer is chunked, its first event at once
        thread_id = stack.create_thread()
        connection.request(
            "POST",
            f"/threads/{thread_id}/runs/stream",
            body=json.dumps({"assistant_id": "support", "input": BILLING}),
            headers={"x-api-key": KEY_A, "Content-Type": "application/json"},
        )
        streamed = connection.getresponse()
        assert streamed.status == 200
        assert streamed.getheader("Transfer-Encoding") == "chunked"
        assert streamed.getheader("Content-Type", "").startswith("text/event-stream")
        assert streamed.read1().startswith(b"event: metadata\r\n")
        connection.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_streamed_run_with_a_large_input_stores_it_in_the_bucket(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import os
    import uuid

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    stack = Stack(moto_endpoint, payload_bucket=f"payloads-{uuid.uuid4().hex[:10]}")
    # WHEN a client streams a run whose input is larger than a DynamoDB item
    text = base64.b64encode(os.urandom(450_000)).decode()
    thread_id = stack.create_thread()
    _, headers = _stream(
        stack,
        f"/threads/{thread_id}/runs/stream",
        {"assistant_id": "support", "input": {"messages": [{"role": "user", "content": text}]}},
    )
    # THEN the run runs on the whole input, kept in the bucket
    stack.pump()
    run = stack.store.get_run(thread_id, _run_id(headers))
    assert run is not None
    assert run.status == "success"
    assert run.kwargs["input"]["bytes"] > 400_000
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    assert state["values"]["messages"][0]["content"] == text
    # AND its stream carries the large values whole (an event over an item's size is
    # written in parts and read back as one)
    joined = serve("GET", headers["Location"], {"x-api-key": KEY_A}, b"", services=_services(stack))
    assert joined is not None
    body = b"".join(joined.body).decode()
    values = [
        json.loads(line[len("data: ") :])
        for line in body.split("\r\n")
        if line.startswith("data: ") and text in line
    ]
    assert values, "no event carried the large input"
    assert any(
        m.get("content") == text
        for v in values
        if isinstance(v, dict)
        for m in v.get("messages", [])
    )


def _disconnect_mid_stream(
    stack: Stack, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, str]:
    """Open a stream on the stream function's web server, read its first event, go away.

    A real client over real HTTP: the server sees the socket closed. The headers it sent."""
    import http.client
    import threading

    from functions.handlers.stream import make_server

    server = make_server(0, services=_services(stack))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    before = set(threading.enumerate())
    try:
        connection = http.client.HTTPConnection(str(host), port, timeout=10)
        connection.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers={"x-api-key": KEY_A, "Content-Type": "application/json"},
        )
        streamed = connection.getresponse()
        assert streamed.status == 200
        headers = dict(streamed.getheaders())
        assert streamed.read1().startswith(b"event: metadata\r\n")
        streamed.close()
        connection.close()
        # The server's request thread ends once it saw the client go (within a poll).
        handlers = [t for t in threading.enumerate() if t not in before]
        assert _wait_for(lambda: not any(t.is_alive() for t in handlers), 5)
        return headers
    finally:
        server.shutdown()
        server.server_close()


def _wait_for(predicate: Any, timeout_s: float) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def _status(stack: Stack, thread_id: str, run_id: str) -> str:
    run = stack.store.get_run(thread_id, run_id)
    assert run is not None
    return run.status


def test_a_stream_client_that_asked_for_cancel_and_goes_away_gets_its_run_cancelled(
    stack: Stack,
) -> None:
    # GIVEN a stream of a run (not started yet: its step is queued) created with
    # on_disconnect="cancel"
    thread_id = stack.create_thread()
    body = {"assistant_id": "support", "input": BILLING, "on_disconnect": "cancel"}

    # WHEN its client reads the first event and goes away
    headers = _disconnect_mid_stream(stack, "POST", f"/threads/{thread_id}/runs/stream", body)
    run_id = _run_id(headers)

    # THEN the run is cancelled as POST .../cancel does (interrupt), the thread free again;
    # the SDK's reconnect address carries the request on
    assert _wait_for(lambda: _status(stack, thread_id, run_id) == "interrupted", 10)
    assert headers["Location"].endswith("/stream?cancel_on_disconnect=true")
    assert stack.api("GET", f"/threads/{thread_id}").body["status"] == "idle"


def test_a_stream_client_that_goes_away_by_default_leaves_its_run_going(stack: Stack) -> None:
    # GIVEN a stream of a run created without on_disconnect (continue), and one with it said
    thread_id = stack.create_thread()
    other = stack.create_thread()
    default = _disconnect_mid_stream(
        stack,
        "POST",
        f"/threads/{thread_id}/runs/stream",
        {"assistant_id": "support", "input": BILLING},
    )
    said = _disconnect_mid_stream(
        stack,
        "POST",
        f"/threads/{other}/runs/stream",
        {"assistant_id": "support", "input": BILLING, "on_disconnect": "continue"},
    )

    # WHEN the clients have gone THEN both runs go on, and run to their end
    assert _status(stack, thread_id, _run_id(default)) == "pending"
    assert _status(stack, other, _run_id(said)) == "pending"
    assert default["Location"].endswith("/stream")
    stack.pump()
    assert _status(stack, thread_id, _run_id(default)) == "success"
    assert _status(stack, other, _run_id(said)) == "success"


def test_a_joined_stream_with_cancel_on_disconnect_cancels_the_run_when_its_client_goes(
    stack: Stack,
) -> None:
    # GIVEN a background run, joined with the official join_stream's cancel_on_disconnect
    thread_id = stack.create_thread()
    run_id = stack.start_run(thread_id, input=BILLING, stream_resumable=True)["run_id"]
    path = f"/threads/{thread_id}/runs/{run_id}/stream?cancel_on_disconnect=true"

    # WHEN the joining client goes away THEN the run is cancelled
    _disconnect_mid_stream(stack, "GET", path)
    assert _wait_for(lambda: _status(stack, thread_id, run_id) == "interrupted", 10)


@pytest.mark.parametrize("route", ["stream", "background"])
def test_an_on_disconnect_that_is_not_a_mode_is_a_422(stack: Stack, route: str) -> None:
    thread_id = stack.create_thread()
    body = {"assistant_id": "support", "on_disconnect": "explode"}
    if route == "stream":
        streamed, _ = _answer(stack, f"/threads/{thread_id}/runs/stream", body)
        status, detail = streamed.status, json.loads(b"".join(streamed.body))["detail"]
    else:
        reply = stack.api("POST", f"/threads/{thread_id}/runs", body)
        status, detail = reply.status, reply.body["detail"]
    assert status == 422
    assert "on_disconnect" in json.dumps(detail)


def _answer(stack: Stack, path: str, body: dict[str, Any]) -> tuple[Answer, dict[str, str]]:
    answer = serve(
        "POST", path, {"x-api-key": KEY_A}, json.dumps(body).encode(), services=_services(stack)
    )
    assert answer is not None
    return answer, dict(answer.headers)

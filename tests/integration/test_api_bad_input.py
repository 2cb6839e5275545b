"""Hostile and broken requests: each answer is a 4xx with ``{"detail": ...}``, never a 5xx,
and what was stored before is still there, unchanged. One test per bug found by fuzzing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from functions.handlers import api
from tests.integration.conftest import KEY_A, LambdaContext, Reply, Stack, load_event

pytestmark = pytest.mark.integration


def send(
    stack: Stack,
    method: str,
    path: str,
    body: str | None,
    *,
    base64_body: bytes | str | None = None,
    content_type: str | None = "application/json",
) -> Reply:
    """One request with a body exactly as given (Stack.api always sends valid JSON)."""
    event = load_event("api_create_thread.json")
    event["httpMethod"] = method
    event["path"] = path
    event["requestContext"]["httpMethod"] = method
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    headers = {"x-api-key": KEY_A}
    if content_type is not None:
        headers["Content-Type"] = content_type
    event["headers"] = headers
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    event["body"] = body
    event["isBase64Encoded"] = False
    if base64_body is not None:
        raw = base64_body if isinstance(base64_body, str) else base64.b64encode(base64_body)
        event["body"] = raw if isinstance(raw, str) else raw.decode()
        event["isBase64Encoded"] = True
    response = api.handler(event, LambdaContext(), services=stack.services)
    text = response.get("body") or ""
    return Reply(response["statusCode"], json.loads(text) if text else None, {})


def thread_as_stored(stack: Stack, thread_id: str) -> dict[str, Any]:
    reply = stack.api("GET", f"/threads/{thread_id}")
    assert reply.status == 200, reply.body
    return dict(reply.body)


@pytest.mark.parametrize(
    ("raw", "base64_body", "what"),
    [
        (None, b'{"metadata": {"x": "\xff\xfe"}}', "bytes that are not UTF-8"),
        (None, "not base64!", "a body flagged base64 that is not"),
        ('{"metadata": {"n": NaN}}', None, "NaN"),
        ('{"metadata": {"n": -Infinity}}', None, "Infinity"),
        ('{"metadata": {"n": 1e999}}', None, "a float that overflows to inf"),
        ('{"metadata": {"n": ' + "9" * 5000 + "}}", None, "an int over Python's digit limit"),
        ('{"metadata": ' + '{"a": ' * 70 + "1" + "}" * 70 + "}", None, "70 levels of objects"),
        ("[" * 100_000 + "]" * 100_000, None, "100 000 levels of arrays"),
        ('{"metadata": {"s": "\\ud800"}}', None, "a lone surrogate"),
        ("{not json", None, "malformed JSON"),
        ("a=b&c=d", None, "a form body"),
    ],
)
def test_bodies_that_were_5xx_are_422_and_change_nothing(
    stack: Stack, raw: str | None, base64_body: bytes | str | None, what: str
) -> None:
    # GIVEN a thread with metadata
    stack.api("POST", "/threads", {"thread_id": "kept", "metadata": {"owner": "ada"}})
    before = thread_as_stored(stack, "kept")

    # WHEN its metadata is patched, and a thread created, with the broken body
    patched = send(stack, "PATCH", "/threads/kept", raw, base64_body=base64_body)
    created = send(stack, "POST", "/threads", raw, base64_body=base64_body)

    # THEN both are 422 with a detail, and the thread and the thread list are unchanged
    assert (patched.status, created.status) == (422, 422), what
    assert patched.body["detail"], what
    assert created.body["detail"], what
    assert thread_as_stored(stack, "kept") == before
    assert [t["thread_id"] for t in stack.api("POST", "/threads/search", {}).body] == ["kept"]


@pytest.mark.parametrize("raw", ["[]", '"x"', "null", "1", ""])
def test_a_run_body_that_is_not_an_object_is_422(stack: Stack, raw: str) -> None:
    # GIVEN a thread
    thread_id = stack.create_thread()
    # WHEN a run is created with a JSON body that is not an object (or no body)
    reply = send(stack, "POST", f"/threads/{thread_id}/runs", raw)
    # THEN 422, and no run was stored
    assert reply.status == 422
    assert stack.api("GET", f"/threads/{thread_id}/runs").body == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_json_body_is_read_as_json_whatever_the_content_type(
    stack: Stack, content_type: str | None
) -> None:
    # WHEN a thread is created with a JSON body but another content type (curl -d sends
    # form-urlencoded), which made Powertools answer 500 (text/plain) or drop every field
    reply = send(
        stack,
        "POST",
        "/threads",
        json.dumps({"thread_id": "typed", "metadata": {"unicode": "ünï 😀"}}),
        content_type=content_type,
    )
    # THEN the body is read as JSON: the thread has the id and metadata sent
    assert reply.status == 200, reply.body
    assert thread_as_stored(stack, "typed")["metadata"] == {"unicode": "ünï 😀"}


def test_unknown_fields_and_duplicate_keys_follow_json_rules(stack: Stack) -> None:
    # WHEN a body has a field the API does not know and a key given twice
    reply = send(stack, "POST", "/threads", '{"thread_id": "a", "thread_id": "b", "extra": 1}')
    # THEN the unknown field is ignored and the last duplicate wins (Python's json)
    assert reply.status == 200
    assert reply.body["thread_id"] == "b"


@pytest.mark.parametrize(
    "path",
    [
        "/threads/" + "x" * 201,
        "/threads/" + "x" * 5000 + "/runs",
        "/threads/t/runs/" + "r" * 3000,
        "/threads/t/state/" + "c" * 3000,
        "/assistants/" + "a" * 3000,
    ],
)
def test_ids_too_long_to_be_a_key_are_422(stack: Stack, path: str) -> None:
    # WHEN a path carries an id longer than any id can be (DynamoDB rejects keys over
    # 2048 bytes with a ValidationException: a 503 before)
    reply = stack.api("GET", path)
    # THEN 422 naming the path parameter
    assert reply.status == 422
    assert reply.body["detail"][0]["loc"][0] == "path"


def test_a_run_too_large_to_store_is_413_and_the_thread_stays_free(stack: Stack) -> None:
    # GIVEN an idle thread
    thread_id = stack.create_thread()
    # WHEN a run's input fits the 1 MiB body limit but not a 400 KB DynamoDB item
    big = stack.api(
        "POST",
        f"/threads/{thread_id}/runs",
        {"assistant_id": "support", "input": {"blob": "x" * 500_000}},
    )
    # THEN 413 — and the thread is not left busy with a run that was never stored
    # (before: every later run was queued behind it, or 409 with multitask_strategy reject)
    assert big.status == 413
    assert "400 KB" in big.body["detail"]
    assert thread_as_stored(stack, thread_id)["status"] == "idle"
    assert stack.api("GET", f"/threads/{thread_id}/runs").body == []
    ok = stack.api(
        "POST",
        f"/threads/{thread_id}/runs",
        {"assistant_id": "support", "input": {"messages": []}, "multitask_strategy": "reject"},
    )
    assert ok.status == 200, ok.body


def test_metadata_too_large_to_store_is_413_and_the_old_metadata_stays(stack: Stack) -> None:
    # GIVEN a thread with metadata
    stack.api("POST", "/threads", {"thread_id": "meta", "metadata": {"owner": "ada"}})
    # WHEN metadata too large for a DynamoDB item is set or created
    patched = stack.api("PATCH", "/threads/meta", {"metadata": {"big": "x" * 500_000}})
    created = stack.api("POST", "/threads", {"metadata": {"big": "x" * 500_000}})
    # THEN 413 (it was a 503 "retry shortly", which never succeeds), and nothing changed
    assert (patched.status, created.status) == (413, 413)
    assert thread_as_stored(stack, "meta")["metadata"] == {"owner": "ada"}
    assert len(stack.api("POST", "/threads/search", {}).body) == 1


def test_unknown_checkpoints_are_404_and_the_thread_head_stays(stack: Stack) -> None:
    # GIVEN a thread that ran once
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input={"messages": [{"role": "user", "content": "refund"}]})
    stack.pump()
    head = stack.api("GET", f"/threads/{thread_id}/state").body
    runs_before = stack.api("GET", f"/threads/{thread_id}/runs").body

    # WHEN a checkpoint that does not exist is read, edited, and run from
    read = stack.api("GET", f"/threads/{thread_id}/state/nope")
    read_post = stack.api(
        "POST", f"/threads/{thread_id}/state/checkpoint", {"checkpoint": {"checkpoint_id": "nope"}}
    )
    edited = stack.api(
        "POST", f"/threads/{thread_id}/state", {"values": None, "checkpoint_id": "nope"}
    )
    run = stack.api(
        "POST", f"/threads/{thread_id}/runs", {"assistant_id": "support", "checkpoint_id": "nope"}
    )

    # THEN all are 404 (before: a made-up empty state 200, and update_state/run forked the
    # thread from an empty state, which became its head), and the head is where it was
    assert [r.status for r in (read, read_post, edited, run)] == [404] * 4
    assert stack.api("GET", f"/threads/{thread_id}/state").body == head
    assert stack.api("GET", f"/threads/{thread_id}/runs").body == runs_before


def test_a_run_config_cannot_point_at_another_thread_or_checkpoint(stack: Stack) -> None:
    # GIVEN a thread
    thread_id = stack.create_thread()
    # WHEN a run's config names a thread, checkpoint and langgraph internals of its own
    run = stack.start_run(
        thread_id,
        input={"messages": []},
        config={
            "configurable": {
                "thread_id": "someone-elses",
                "checkpoint_id": "x",
                "checkpoint_ns": "y",
                "__pregel_checkpointer": "z",
                "user_id": "u1",
            },
            "tags": ["t"],
        },
    )
    # THEN only the client's own keys are kept for the worker
    assert run["kwargs"]["config"] == {"configurable": {"user_id": "u1"}, "tags": ["t"]}


def test_an_unknown_run_status_filter_is_422(stack: Stack) -> None:
    thread_id = stack.create_thread()
    # WHEN runs are listed with a status that does not exist
    reply = stack.api("GET", f"/threads/{thread_id}/runs", query={"status": "\x00"})
    # THEN 422 (it was silently an empty list)
    assert reply.status == 422
    assert reply.body["detail"][0]["loc"] == ["query", "status"]


@pytest.mark.parametrize(("limit", "status"), [("-1", 422), ("0", 422), (str(10**9), 422)])
def test_limits_out_of_range_are_422(stack: Stack, limit: str, status: int) -> None:
    thread_id = stack.create_thread()
    reply = stack.api("GET", f"/threads/{thread_id}/runs", query={"limit": limit})
    assert reply.status == status


def test_ids_with_any_unicode_are_reachable_through_the_encoded_path(stack: Stack) -> None:
    # GIVEN a thread whose id has non-ASCII characters and a space
    created = stack.api("POST", "/threads", {"thread_id": "ü t 😀"})
    assert created.status == 200
    # WHEN it is read and run through the path as API Gateway passes it (percent-encoded)
    got = stack.api("GET", "/threads/%C3%BC%20t%20%F0%9F%98%80")
    run = stack.api(
        "POST",
        "/threads/%C3%BC%20t%20%F0%9F%98%80/runs",
        {"assistant_id": "support", "input": {"messages": []}},
    )
    # THEN it is found (it was a 404: the id was matched still encoded), and the run's
    # location header is ASCII, percent-encoded (a raw emoji broke the HTTP adapter)
    assert got.status == 200
    assert got.body["thread_id"] == "ü t 😀"
    assert run.status == 200
    location = run.headers["Content-Location"]
    assert location.startswith("/threads/%C3%BC%20t%20%F0%9F%98%80/runs/")
    assert stack.api("GET", location).body["thread_id"] == "ü t 😀"


def test_a_thread_id_with_a_slash_is_reachable_and_a_path_not_utf8_is_404(stack: Stack) -> None:
    # GIVEN a thread whose id has a slash
    assert stack.api("POST", "/threads", {"thread_id": "a/b"}).status == 200
    # WHEN it is read with the slash encoded, and a path is not UTF-8 once decoded
    slash = stack.api("GET", "/threads/a%2Fb")
    not_utf8 = stack.api("GET", "/threads/%FF")
    # THEN the thread is found, and the other path is a 404 (it was a 404 for both)
    assert slash.status == 200
    assert slash.body["thread_id"] == "a/b"
    assert not_utf8.status == 404

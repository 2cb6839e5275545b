"""Tenants over every route of the API's own OpenAPI document.

The routes come from ``GET /openapi.json``, not from a hand list: a route added later that
reaches a thread or run without the tenant check answers another tenant's key with data (or
a 422/500) and fails here, and a route that is not thread-scoped fails until it is listed in
``NOT_THREAD_SCOPED`` with the reason it needs no per-thread check.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import KEY_A, KEY_B, Stack

pytestmark = pytest.mark.integration

# Routes that name no thread or run, each with why another tenant cannot reach data through it.
NOT_THREAD_SCOPED: dict[tuple[str, str], str] = {
    ("GET", "/ok"): "health check, no data",
    ("POST", "/assistants/search"): "assistants are the deployment's graphs, shared by tenants",
    ("GET", "/assistants/{assistant_id}"): "a registered graph, shared",
    ("GET", "/assistants/{assistant_id}/graph"): "a registered graph, shared",
    ("GET", "/assistants/{assistant_id}/schemas"): "a registered graph, shared",
    ("GET", "/assistants/{assistant_id}/subgraphs"): "a registered graph, shared",
    ("POST", "/threads"): "creates a thread of the caller (same id as another's: 409, tested)",
    ("POST", "/threads/search"): "filtered by the caller's tenant (tested below)",
    ("POST", "/runs"): "stateless run: a new thread of the caller",
    ("POST", "/runs/wait"): "stateless run: a new thread of the caller",
    ("GET", "/approvals"): "filtered by the caller's tenant (tested below)",
}

# Bodies valid for the route, so that the answer is the tenant check's and not validation's.
RUN_BODY = {"assistant_id": "support", "input": {"messages": []}}
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/threads/{thread_id}"): {"metadata": {"owner": "b"}},
    ("POST", "/threads/{thread_id}/state"): {"values": {"route": "b"}, "as_node": "finalize"},
    ("POST", "/threads/{thread_id}/history"): {"limit": 10},
    ("POST", "/threads/{thread_id}/runs"): RUN_BODY,
    ("POST", "/threads/{thread_id}/runs/wait"): RUN_BODY,
}


def _routes(stack: Stack) -> list[tuple[str, str]]:
    spec = stack.api("GET", "/openapi.json", api_key=None).body
    return sorted(
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    )


def _fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"{path}: a path parameter this test does not know; add it to ids"
    return path


def _tenant_a_thread(stack: Stack) -> dict[str, str]:
    thread_id = stack.create_thread(metadata={"owner": "a"})
    run = stack.start_run(thread_id, input={"messages": [{"role": "user", "content": "hi"}]})
    stack.pump()
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    return {
        "thread_id": thread_id,
        "run_id": run["run_id"],
        "checkpoint_id": state["checkpoint"]["checkpoint_id"],
    }


def test_every_thread_scoped_route_is_404_to_another_tenant(stack: Stack) -> None:
    # GIVEN tenant A's thread with a finished run and a checkpoint
    ids = _tenant_a_thread(stack)
    before = stack.api("GET", f"/threads/{ids['thread_id']}").body
    routes = _routes(stack)
    scoped = [r for r in routes if "{thread_id}" in r[1]]
    listed = {r for r in routes if "{thread_id}" not in r[1]}

    # WHEN tenant B calls every thread-scoped route of the OpenAPI document on it
    answers = {}
    for method, template in scoped:
        body = BODIES.get((method, template))
        if method == "POST" and template.endswith("/checkpoint"):
            body = {"checkpoint": {"checkpoint_id": ids["checkpoint_id"]}}
        reply = stack.api(method, _fill(template, ids), body, api_key=KEY_B)
        answers[(method, template)] = (reply.status, reply.body)

    # THEN each answers 404, as for a thread that does not exist; the document lists the routes
    # of the issue, every other route is listed with its reason, and A's thread is untouched
    leaks = {route: answer for route, answer in answers.items() if answer[0] != 404}
    assert leaks == {}
    expected = {
        ("POST", "/threads/{thread_id}/runs/{run_id}/cancel"),
        ("GET", "/threads/{thread_id}/runs/{run_id}/join"),
        ("GET", "/threads/{thread_id}/history"),
        ("POST", "/threads/{thread_id}/history"),
        ("PATCH", "/threads/{thread_id}"),
        ("POST", "/threads/{thread_id}/state"),
        ("GET", "/threads/{thread_id}/runs"),
        ("GET", "/threads/{thread_id}/state/{checkpoint_id}"),
        ("GET", "/threads/{thread_id}/approvals"),
        ("GET", "/threads/{thread_id}/runs/{run_id}/webhooks"),
    }
    assert expected <= set(answers)
    assert listed == set(NOT_THREAD_SCOPED), "list each route without {thread_id} with a reason"
    after = stack.api("GET", f"/threads/{ids['thread_id']}").body
    assert after == before
    run = stack.api("GET", f"/threads/{ids['thread_id']}/runs/{ids['run_id']}").body
    assert run["status"] == "success"
    runs = stack.api("GET", f"/threads/{ids['thread_id']}/runs").body
    assert [r["run_id"] for r in runs] == [ids["run_id"]]


def test_tenant_wide_listings_hold_only_the_callers_records(stack: Stack) -> None:
    # GIVEN a thread of tenant A
    ids = _tenant_a_thread(stack)

    # WHEN tenant B lists threads and approvals
    threads_b = stack.api("POST", "/threads/search", {}, api_key=KEY_B)
    approvals_b = stack.api("GET", "/approvals", api_key=KEY_B)

    # THEN B sees none of A's, A sees its thread
    assert (threads_b.status, threads_b.body) == (200, [])
    assert (approvals_b.status, approvals_b.body) == (200, [])
    threads_a = stack.api("POST", "/threads/search", {}, api_key=KEY_A).body
    assert [t["thread_id"] for t in threads_a] == [ids["thread_id"]]


def test_same_thread_id_from_two_tenants_is_409_without_the_others_data(stack: Stack) -> None:
    # GIVEN tenant A's thread with a chosen id
    ids = _tenant_a_thread(stack)

    # WHEN tenant B creates a thread with the same id, plainly and with if_exists=do_nothing
    plain = stack.api("POST", "/threads", {"thread_id": ids["thread_id"]}, api_key=KEY_B)
    reuse = stack.api(
        "POST",
        "/threads",
        {"thread_id": ids["thread_id"], "if_exists": "do_nothing"},
        api_key=KEY_B,
    )

    # THEN both are 409 naming only the id, and the thread stays A's alone
    for reply in (plain, reuse):
        assert reply.status == 409
        assert reply.body == {"detail": f"Thread id {ids['thread_id']!r} is not available."}
    assert stack.api("GET", f"/threads/{ids['thread_id']}", api_key=KEY_B).status == 404
    mine = stack.api("GET", f"/threads/{ids['thread_id']}", api_key=KEY_A).body
    assert mine["metadata"]["owner"] == "a"

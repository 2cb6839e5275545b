"""The HTTP surface: threads, assistants, errors and their status codes, tenants."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import KEY_A, KEY_B, Stack

pytestmark = pytest.mark.integration


def test_ok_and_openapi_need_no_key(stack: Stack) -> None:
    # WHEN the health and API description are read without a key
    ok = stack.api("GET", "/ok", api_key=None)
    spec = stack.api("GET", "/openapi.json", api_key=None)

    # THEN both answer, and the description lists the run endpoints
    assert ok.status == 200
    assert ok.body == {"ok": True}
    assert spec.status == 200
    assert "/threads/{thread_id}/runs" in spec.body["paths"]


def test_thread_lifecycle(stack: Stack) -> None:
    # GIVEN a thread created with a chosen id and metadata
    created = stack.api("POST", "/threads", {"thread_id": "t-1", "metadata": {"user": "ada"}})

    # WHEN it is read, patched, searched and deleted
    got = stack.api("GET", "/threads/t-1")
    patched = stack.api("PATCH", "/threads/t-1", {"metadata": {"tier": "gold"}})
    found = stack.api("POST", "/threads/search", {"metadata": {"tier": "gold"}})
    deleted = stack.api("DELETE", "/threads/t-1")
    after = stack.api("GET", "/threads/t-1")

    # THEN each step answers as the SDK expects
    assert created.status == 200
    assert created.body["status"] == "idle"
    assert got.body["metadata"] == {"user": "ada"}
    assert patched.body["metadata"] == {"user": "ada", "tier": "gold"}
    assert [t["thread_id"] for t in found.body] == ["t-1"]
    assert deleted.status == 204
    assert after.status == 404


def test_create_thread_twice(stack: Stack) -> None:
    # GIVEN an existing thread
    stack.api("POST", "/threads", {"thread_id": "t-2"})

    # WHEN it is created again, with and without if_exists=do_nothing
    again = stack.api("POST", "/threads", {"thread_id": "t-2"})
    reused = stack.api("POST", "/threads", {"thread_id": "t-2", "if_exists": "do_nothing"})

    # THEN the first is a conflict and the second returns the existing thread
    assert again.status == 409
    assert reused.status == 200
    assert reused.body["thread_id"] == "t-2"


def test_assistants_are_the_registered_graphs(stack: Stack) -> None:
    # WHEN assistants are searched and one is read
    found = stack.api("POST", "/assistants/search", {})
    one = stack.api("GET", "/assistants/support")
    missing = stack.api("GET", "/assistants/nope")

    # THEN there is one assistant per graph, id = graph id
    assert [a["assistant_id"] for a in found.body] == ["support", "research"]
    assert one.body["graph_id"] == "support"
    assert missing.status == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/threads/nope"),
        ("GET", "/threads/nope/state"),
        ("POST", "/threads/nope/history"),
        ("GET", "/threads/nope/runs"),
        ("GET", "/threads/nope/runs/r"),
        ("GET", "/no/such/route"),
    ],
)
def test_unknown_resources_are_404(stack: Stack, method: str, path: str) -> None:
    # WHEN an unknown resource is requested
    reply = stack.api(method, path, {} if method == "POST" else None)

    # THEN 404 with a detail
    assert reply.status == 404
    assert reply.body["detail"]


def test_unknown_run_and_assistant_are_404(stack: Stack) -> None:
    thread_id = stack.create_thread()
    # WHEN an unknown run is read and a run of an unknown assistant is created
    run = stack.api("GET", f"/threads/{thread_id}/runs/00000000-0000-0000-0000-000000000000")
    assistant = stack.api("POST", f"/threads/{thread_id}/runs", {"assistant_id": "nope"})
    # THEN both are 404
    assert run.status == 404
    assert assistant.status == 404


def test_run_on_missing_thread_can_create_it(stack: Stack) -> None:
    # WHEN a run names a thread that does not exist, with if_not_exists=create
    reply = stack.api(
        "POST",
        "/threads/new-t/runs",
        {"assistant_id": "support", "if_not_exists": "create", "input": {"messages": []}},
    )
    # THEN the thread is created and the run accepted
    assert reply.status == 200
    assert stack.api("GET", "/threads/new-t").body["metadata"]["graph_id"] == "support"


@pytest.mark.parametrize(
    ("raw_body", "what"),
    [
        ("{not json", "malformed JSON"),
        (json.dumps({"input": {}}), "missing assistant_id"),
        (json.dumps({"assistant_id": "support", "priority": "urgent"}), "bad priority"),
        (json.dumps({"assistant_id": "support", "multitask_strategy": "queue"}), "bad strategy"),
        (json.dumps(["a", "list"]), "not an object"),
        (json.dumps({"assistant_id": "support", "interrupt_before": ["billing"]}), "unsupported"),
    ],
)
def test_invalid_run_bodies_are_422(stack: Stack, raw_body: str, what: str) -> None:
    thread_id = stack.create_thread()
    # WHEN a run is created with an invalid body
    reply = stack.api("POST", f"/threads/{thread_id}/runs", raw_body=raw_body)
    # THEN 422 with a detail, never a 5xx
    assert reply.status == 422, what
    assert reply.body["detail"], what


def test_bad_query_parameters_are_422(stack: Stack) -> None:
    thread_id = stack.create_thread()
    reply = stack.api("GET", f"/threads/{thread_id}/runs", query={"limit": "many"})
    assert reply.status == 422


def test_body_over_one_mib_is_413(stack: Stack) -> None:
    thread_id = stack.create_thread()
    # WHEN the body is larger than 1 MiB
    big = json.dumps({"assistant_id": "support", "input": {"blob": "x" * (1024 * 1024)}})
    reply = stack.api("POST", f"/threads/{thread_id}/runs", raw_body=big)
    # THEN 413
    assert reply.status == 413
    assert "1 MiB" in reply.body["detail"]


def test_missing_or_unknown_key_is_401(stack: Stack) -> None:
    assert stack.api("POST", "/threads", {}, api_key=None).status == 401
    assert stack.api("POST", "/threads", {}, api_key="wrong").status == 401


def test_tenants_see_only_their_own_threads(stack: Stack) -> None:
    # GIVEN a thread and a run of tenant A
    thread_id = stack.create_thread(metadata={"owner": "a"})
    run = stack.start_run(thread_id, input={"messages": []})

    # WHEN tenant B reaches for them
    as_b = [
        stack.api("GET", f"/threads/{thread_id}", api_key=KEY_B),
        stack.api("GET", f"/threads/{thread_id}/state", api_key=KEY_B),
        stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}", api_key=KEY_B),
        stack.api("POST", f"/threads/{thread_id}/runs", {"assistant_id": "support"}, api_key=KEY_B),
        stack.api("DELETE", f"/threads/{thread_id}", api_key=KEY_B),
    ]
    search_b = stack.api("POST", "/threads/search", {}, api_key=KEY_B)

    # THEN every answer is 404 and B's search is empty, while A still sees the thread
    assert [r.status for r in as_b] == [404] * 5
    assert search_b.body == []
    assert stack.api("GET", f"/threads/{thread_id}", api_key=KEY_A).status == 200


def test_update_state_refused_while_a_run_is_active(stack: Stack) -> None:
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input={"messages": []})
    reply = stack.api(
        "POST", f"/threads/{thread_id}/state", {"values": {"route": "x"}, "as_node": "classify"}
    )
    assert reply.status == 409


def test_update_state_with_an_unknown_node_is_422(stack: Stack) -> None:
    # GIVEN a thread that ran once
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input={"messages": [{"role": "user", "content": "hi"}]})
    stack.pump()
    # WHEN its state is updated as a node the graph does not have
    reply = stack.api(
        "POST", f"/threads/{thread_id}/state", {"values": {"route": "x"}, "as_node": "nope"}
    )
    # THEN 422 with what was wrong
    assert reply.status == 422
    assert "nope" in reply.body["detail"]


def test_update_state_as_node_changes_the_values(stack: Stack) -> None:
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input={"messages": [{"role": "user", "content": "hi"}]})
    stack.pump()
    # WHEN the state is updated as the finalize node
    reply = stack.api(
        "POST",
        f"/threads/{thread_id}/state",
        {"values": {"route": "edited"}, "as_node": "finalize"},
    )
    # THEN the new checkpoint holds the edit, and the thread record shows it too
    assert reply.status == 200
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    assert state["checkpoint"]["checkpoint_id"] == reply.body["checkpoint"]["checkpoint_id"]
    assert state["values"]["route"] == "edited"
    assert stack.api("GET", f"/threads/{thread_id}").body["values"]["route"] == "edited"


def test_stateless_run_gets_a_thread_of_its_own(stack: Stack) -> None:
    # WHEN a run is created without a thread
    reply = stack.api("POST", "/runs", {"assistant_id": "support", "input": {"messages": []}})
    stack.pump()
    # THEN it ran on a new thread, found at its location
    assert reply.status == 200
    location = reply.headers["Content-Location"]
    run = stack.api("GET", location).body
    assert run["status"] == "success", run["error"]


def test_concurrent_requests_keep_their_own_tenant(stack: Stack) -> None:
    # GIVEN threads of two tenants
    thread_a = stack.create_thread()
    thread_b = str(stack.api("POST", "/threads", {}, api_key=KEY_B).body["thread_id"])

    # WHEN both tenants read their threads from many threads at once
    from concurrent.futures import ThreadPoolExecutor

    def read(i: int) -> int:
        key, thread_id = (KEY_A, thread_a) if i % 2 else (KEY_B, thread_b)
        return stack.api("GET", f"/threads/{thread_id}", api_key=key).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(read, range(64)))

    # THEN every request was answered as its own tenant
    assert statuses == [200] * 64


def test_keys_kept_hashed_in_the_runtime_table(moto_endpoint: str, stack: Stack) -> None:
    # GIVEN a deployment that keeps API keys in the runtime table, and a key issued for acme
    from infra.api_keys import create_key

    table_stack = Stack(moto_endpoint, api_keys_in_table=True)
    key, _ = create_key(table_stack.settings.runtime_table, "acme")

    # WHEN the key is used, and an unknown one
    created = table_stack.api("POST", "/threads", {}, api_key=key)
    unknown = table_stack.api("POST", "/threads", {}, api_key="lg_unknown")

    # THEN the issued key works, the unknown one is refused, and the key itself is not stored
    assert created.status == 200
    assert unknown.status == 401
    items = table_stack.dynamodb.scan(TableName=table_stack.settings.runtime_table)["Items"]
    assert key not in json.dumps(items)

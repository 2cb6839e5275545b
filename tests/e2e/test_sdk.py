"""The local stack as users run it (``python -m infra.local``), driven by the unmodified langgraph-sdk."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

BILLING: dict[str, Any] = {
    "messages": [{"role": "user", "content": "I was charged twice on my invoice"}]
}
TECHNICAL: dict[str, Any] = {
    "messages": [{"role": "user", "content": "The app shows an error and crashes"}]
}


@pytest.fixture(scope="module")
def client(local_stack_url: str) -> SyncLangGraphClient:
    # api_key="" keeps the SDK from sending a LangSmith key found in the environment.
    return get_sync_client(url=local_stack_url, api_key="")


def _ai_replies(values: dict[str, Any]) -> list[str]:
    return [str(m["content"]) for m in values["messages"] if m["type"] == "ai"]


def test_a_background_run_completes_and_join_returns_its_values(
    client: SyncLangGraphClient,
) -> None:
    # GIVEN a new thread
    thread = client.threads.create()

    # WHEN a background run is started and joined
    run = client.runs.create(thread["thread_id"], "support", input=BILLING)
    values = client.runs.join(thread["thread_id"], run["run_id"])

    # THEN the run succeeded and the reply was appended to the conversation
    assert run["status"] in ("pending", "running")
    assert client.runs.get(thread["thread_id"], run["run_id"])["status"] == "success"
    assert [m["type"] for m in values["messages"]] == ["human", "ai"]
    assert _ai_replies(values)


def test_state_and_history_follow_the_run(client: SyncLangGraphClient) -> None:
    # GIVEN a thread with one finished run
    thread = client.threads.create()
    values = client.runs.wait(thread["thread_id"], "support", input=BILLING)

    # WHEN its state and history are read
    state = client.threads.get_state(thread["thread_id"])
    history = client.threads.get_history(thread["thread_id"], limit=50)

    # THEN the state holds the final values and the history lists every step, newest first
    assert state["values"] == values
    assert state["next"] == []
    assert history[0]["checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    assert len(history) >= 3
    assert client.threads.get(thread["thread_id"])["status"] == "idle"


def test_a_second_run_on_the_same_thread_continues_the_conversation(
    client: SyncLangGraphClient,
) -> None:
    # GIVEN a thread with one finished run
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "support", input=BILLING)

    # WHEN a second run is started on it
    second = client.runs.create(thread["thread_id"], "support", input=TECHNICAL)
    values = client.runs.join(thread["thread_id"], second["run_id"])

    # THEN both exchanges are in the thread and both runs are listed, newest first
    assert [m["type"] for m in values["messages"]] == ["human", "ai", "human", "ai"]
    runs = client.runs.list(thread["thread_id"])
    assert len(runs) == 2
    assert runs[0]["run_id"] == second["run_id"]
    assert {r["status"] for r in runs} == {"success"}


def test_unknown_thread_and_run_are_404(client: SyncLangGraphClient) -> None:
    # GIVEN ids nobody created
    missing = str(uuid.uuid4())
    thread = client.threads.create()

    # WHEN they are read THEN the API answers 404
    with pytest.raises(httpx.HTTPStatusError) as unknown_thread:
        client.threads.get(missing)
    with pytest.raises(httpx.HTTPStatusError) as unknown_run:
        client.runs.get(thread["thread_id"], missing)
    assert unknown_thread.value.response.status_code == 404
    assert unknown_run.value.response.status_code == 404


def test_plain_http_client_can_start_a_run(local_stack_url: str) -> None:
    # GIVEN a thread created with a bare HTTP request, as curl would
    thread = _post(f"{local_stack_url}/threads", {})

    # WHEN a run is waited on the same way
    values = _post(
        f"{local_stack_url}/threads/{thread['thread_id']}/runs/wait",
        {"assistant_id": "support", "input": TECHNICAL},
    )

    # THEN the reply comes back as JSON
    assert _ai_replies(values)


def test_malformed_json_is_rejected_without_a_server_error(local_stack_url: str) -> None:
    # GIVEN / WHEN a body that is not JSON
    request = urllib.request.Request(
        f"{local_stack_url}/threads",
        data=b"{not json",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)

    # THEN it is a 4xx with a detail
    assert error.value.code == 422
    assert "detail" in json.loads(error.value.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_several_clients_at_once_each_get_their_own_reply(client: SyncLangGraphClient) -> None:
    import concurrent.futures

    # GIVEN four threads, one per client conversation
    threads = [client.threads.create()["thread_id"] for _ in range(4)]
    inputs = [BILLING, TECHNICAL, BILLING, TECHNICAL]

    # WHEN every client waits on its run at the same time (other API environments start)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results: list[Any] = list(
            pool.map(
                lambda pair: client.runs.wait(pair[0], "support", input=pair[1]),
                zip(threads, inputs, strict=True),
            )
        )

    # THEN each thread holds its own question and one reply
    for thread_id, given, values in zip(threads, inputs, results, strict=True):
        assert [m["type"] for m in values["messages"]] == ["human", "ai"]
        assert values["messages"][0]["content"] == given["messages"][0]["content"]
        assert client.threads.get_state(thread_id)["values"] == values

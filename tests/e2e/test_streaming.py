"""Run streams on the local stack (``python -m infra.local``) with the unmodified langgraph-sdk.

The stack here cuts every stream after ``STREAM_MAX_S`` seconds, as API Gateway cuts streamed
responses after 15 minutes: the SDK reconnects with ``Last-Event-ID`` by itself, so every
test that streams longer also shows that a cut stream goes on without gaps or duplicates.
The reference is LangGraph's own ``graph.stream`` in one process (tests/stream_parity.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from infra.local.stack import wait_until_ok
from tests.e2e.conftest import REPO, free_port
from tests.stream_parity import comparable, reference_stream

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-streaming")]

STREAM_MAX_S = 2
BILLING: dict[str, Any] = {
    "messages": [{"role": "user", "content": "I was charged twice on my invoice"}]
}
RESEARCH: dict[str, Any] = {"messages": [{"role": "user", "content": "What is a superstep?"}]}
ALL_MODES = ["values", "updates", "custom", "messages-tuple", "checkpoints", "tasks", "debug"]


@pytest.fixture(scope="module")
def stream_stack_url() -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "LAMBDAGRAPH_PORT": str(port),
        "LAMBDAGRAPH_MOTO_PORT": "0",
        "LAMBDAGRAPH_STREAM_MAX_S": str(STREAM_MAX_S),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("LAMBDAGRAPH_API_KEYS", None)
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lambdagraph-e2e-stream-{port}.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local"],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_ok(url, timeout_s=60)
            except TimeoutError:
                pytest.fail(f"local stack did not start; its log:\n{log_path.read_text()}")
            yield url
        finally:
            process.terminate()
            process.wait(30)


@pytest.fixture(scope="module")
def client(stream_stack_url: str) -> SyncLangGraphClient:
    return get_sync_client(url=stream_stack_url, api_key="")


def _events(parts: Any) -> list[tuple[str, Any]]:
    return [(p.event, p.data) for p in parts]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_each_mode_streams_as_graph_stream_does_in_one_process(
    client: SyncLangGraphClient, mode: str
) -> None:
    # WHEN the support graph is streamed in one mode
    thread = client.threads.create()
    events = _events(
        client.runs.stream(thread["thread_id"], "support", input=BILLING, stream_mode=mode)
    )

    # THEN metadata first, then what graph.stream gives in one process, named and shaped alike
    assert events[0][0] == "metadata"
    assert comparable(events[1:]) == comparable(reference_stream("support", BILLING, [mode]))


def test_a_graph_with_subgraphs_custom_events_and_an_interrupt(client: SyncLangGraphClient) -> None:
    # GIVEN a run that is slower than the stream limit, so the SDK reconnects mid-run
    graph_input = {**RESEARCH, "review": True, "pause_s": STREAM_MAX_S + 1}

    # WHEN it is streamed in every mode with its subgraphs
    thread = client.threads.create()
    events = _events(
        client.runs.stream(
            thread["thread_id"],
            "research",
            input=graph_input,
            stream_mode=ALL_MODES,
            stream_subgraphs=True,
        )
    )

    # THEN every event came once, in order, as graph.stream gives them
    expected = reference_stream("research", graph_input, ALL_MODES, subgraphs=True)
    assert comparable(events[1:]) == comparable(expected)
    names = {name.split("|")[0] for name, _ in events}
    assert {"custom", "messages", "updates"} <= names
    assert any("|research:" in name for name, _ in events)
    assert any("__interrupt__" in data for name, data in events if name == "updates")
    assert client.threads.get(thread["thread_id"])["status"] == "interrupted"


def test_several_modes_together(client: SyncLangGraphClient) -> None:
    modes = ["values", "updates", "messages-tuple"]
    thread = client.threads.create()
    events = _events(
        client.runs.stream(thread["thread_id"], "support", input=BILLING, stream_mode=modes)
    )
    assert comparable(events[1:]) == comparable(reference_stream("support", BILLING, modes))


def test_the_offline_model_streams_its_reply_token_by_token(client: SyncLangGraphClient) -> None:
    thread = client.threads.create()
    tokens = [
        data[0]["content"]
        for name, data in _events(
            client.runs.stream(
                thread["thread_id"], "support", input=BILLING, stream_mode="messages-tuple"
            )
        )
        if name == "messages" and data[1]["langgraph_node"] == "billing"
    ]
    assert len(tokens) > 5
    assert (
        "".join(tokens)
        == "Billing here: I have looked at your account and will sort out the charge."
    )


def test_join_stream_while_the_run_goes_and_after_it_ended(client: SyncLangGraphClient) -> None:
    # GIVEN a background run that asked for a resumable stream
    thread_id = client.threads.create()["thread_id"]
    graph_input = {**RESEARCH, "pause_s": 1}
    modes = ["values", "updates", "custom"]
    run = client.runs.create(
        thread_id, "research", input=graph_input, stream_mode=modes, stream_resumable=True
    )

    # WHEN its stream is joined while it runs, and again after it ended
    during = _events(client.runs.join_stream(thread_id, run["run_id"]))
    assert client.runs.get(thread_id, run["run_id"])["status"] == "success"
    after = _events(client.runs.join_stream(thread_id, run["run_id"]))
    only_custom = _events(client.runs.join_stream(thread_id, run["run_id"], stream_mode="custom"))

    # THEN both replay the whole stream from its start; a mode filter picks from it
    reference = reference_stream("research", graph_input, modes)
    assert comparable(during[1:]) == comparable(reference)
    assert comparable(after[1:]) == comparable(reference)
    custom = [(n, d) for n, d in reference if n == "custom"]
    assert custom
    assert only_custom[1:] == custom


def test_a_reconnect_with_last_event_id_gets_every_event_exactly_once(
    client: SyncLangGraphClient,
) -> None:
    # GIVEN a stream read up to its first custom event, then dropped mid-run
    thread_id = client.threads.create()["thread_id"]
    graph_input = {**RESEARCH, "pause_s": 1}
    modes = ["values", "updates", "custom", "messages-tuple"]
    first: list[tuple[str, Any]] = []
    last_id = None
    run_id = None
    for part in client.runs.stream(thread_id, "research", input=graph_input, stream_mode=modes):
        if part.event == "metadata":
            run_id = part.data["run_id"]
        first.append((part.event, part.data))
        last_id = part.id
        if part.event == "custom":
            break
    assert run_id is not None
    assert last_id is not None
    assert client.runs.get(thread_id, run_id)["status"] in ("pending", "running")

    # WHEN it is joined again from the last event id it got
    rest = _events(client.runs.join_stream(thread_id, run_id, last_event_id=last_id))

    # THEN the two parts together are the whole stream, each event once
    assert comparable((first + rest)[1:]) == comparable(
        reference_stream("research", graph_input, modes)
    )


def test_the_stream_answers_with_the_official_headers(stream_stack_url: str) -> None:
    thread_id = httpx.post(f"{stream_stack_url}/threads", json={}).json()["thread_id"]
    with httpx.stream(
        "POST",
        f"{stream_stack_url}/threads/{thread_id}/runs/stream",
        json={"assistant_id": "support", "input": BILLING},
        timeout=30,
    ) as response:
        body = b"".join(response.iter_bytes())
    run_path = response.headers["content-location"]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["location"] == f"{run_path}/stream"
    assert body.startswith(b"event: metadata\r\ndata: {")
    assert all(
        b"\r\nid: " in block
        for block in body.strip().split(b"\r\n\r\n")
        if block.startswith(b"event:")
    )


def test_an_unsupported_mode_is_refused_with_422(client: SyncLangGraphClient) -> None:
    thread = client.threads.create()
    with pytest.raises(httpx.HTTPStatusError) as raised:
        list(
            client.runs.stream(thread["thread_id"], "support", input=BILLING, stream_mode="events")
        )
    assert raised.value.response.status_code == 422


def _status_after(
    client: SyncLangGraphClient, thread_id: str, run_id: str, timeout_s: float
) -> str:
    """The run's status once it ended (read with runs.get), or as it is at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.runs.get(thread_id, run_id)["status"])
        if status not in ("pending", "running") or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def _disconnect_at_the_tool(parts: Iterator[Any]) -> str:
    """Read a research run's stream up to its tool call starting (mid-run: the tool takes
    ``pause_s``), then go away as a client does: the generator closed, its HTTP connection
    with it. The run's id (from the metadata event)."""
    run_id = ""
    for part in parts:
        if part.event == "metadata":
            run_id = part.data["run_id"]
        # The tool's progress comes from the research subgraph: ``custom|research:<task>``.
        if part.event.startswith("custom|") and part.data.get("status") == "started":
            break
    close = getattr(parts, "close", None)
    assert callable(close)
    close()
    assert run_id
    return run_id


@pytest.mark.parametrize("how", ["on_disconnect", "default", "continue"])
def test_a_client_that_goes_away_mid_run_cancels_it_only_when_it_asked_to(
    client: SyncLangGraphClient, how: str
) -> None:
    # GIVEN a research run whose tool call takes 4 s, streamed by the unmodified SDK with
    # on_disconnect="cancel", without it, or with "continue"
    thread_id = client.threads.create()["thread_id"]
    graph_input = {**RESEARCH, "pause_s": 4}
    options: dict[str, Any] = {}
    if how != "default":
        options["on_disconnect"] = "cancel" if how == "on_disconnect" else "continue"
    parts = client.runs.stream(
        thread_id,
        "research",
        input=graph_input,
        stream_mode=["custom"],
        stream_subgraphs=True,
        **options,
    )

    # WHEN the client disconnects while the tool runs
    run_id = _disconnect_at_the_tool(parts)
    assert client.runs.get(thread_id, run_id)["status"] in ("pending", "running")

    # THEN a client that asked for cancel has its run cancelled (interrupted, the thread
    # free); the default, continue, lets the run finish
    expected = "interrupted" if how == "on_disconnect" else "success"
    assert _status_after(client, thread_id, run_id, timeout_s=30) == expected
    assert client.threads.get(thread_id)["status"] == "idle"


def test_a_join_stream_with_cancel_on_disconnect_cancels_the_run_its_client_leaves(
    client: SyncLangGraphClient,
) -> None:
    # GIVEN a background research run, joined with join_stream(cancel_on_disconnect=True)
    thread_id = client.threads.create()["thread_id"]
    run = client.runs.create(
        thread_id,
        "research",
        input={**RESEARCH, "pause_s": 4},
        stream_mode=["custom"],
        stream_subgraphs=True,
        stream_resumable=True,
    )
    parts = client.runs.join_stream(thread_id, run["run_id"], cancel_on_disconnect=True)

    # WHEN the joining client goes away mid-run THEN the run is cancelled
    assert _disconnect_at_the_tool(parts) == run["run_id"]
    assert _status_after(client, thread_id, run["run_id"], timeout_s=30) == "interrupted"

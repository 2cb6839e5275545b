"""Shapes the unmodified langgraph-sdk user relies on, as LangGraph Platform returns them.

Each test pins one difference ``bench/sdk_parity.py`` found against ``langgraph dev`` and that
we fixed: keys present, statuses, headers. Ids and timestamps are never compared by value.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.errors import NotFoundError

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

BILLING: dict[str, Any] = {
    "messages": [{"role": "user", "content": "I was charged twice on my invoice"}]
}
CANCEL: dict[str, Any] = {"messages": [{"role": "user", "content": "Please cancel my account"}]}
# The id LangGraph Platform gives the default assistant of graph "support" in every deployment.
PLATFORM_SUPPORT_ID = str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), "support"))
THREAD_KEYS = {
    "thread_id",
    "created_at",
    "updated_at",
    "state_updated_at",
    "metadata",
    "status",
    "config",
    "values",
    "interrupts",
}
STATE_KEYS = {
    "values",
    "next",
    "checkpoint",
    "metadata",
    "created_at",
    "parent_checkpoint",
    "tasks",
    "interrupts",
    "checkpoint_id",
    "parent_checkpoint_id",
}


def fields(answer: Any) -> dict[str, Any]:
    """An SDK answer as a plain dict: its TypedDicts leave out fields the server sends."""
    assert isinstance(answer, dict)
    return answer


@pytest.fixture(scope="module")
def client(local_stack_url: str) -> SyncLangGraphClient:
    # api_key="" keeps the SDK from sending a LangSmith key found in the environment.
    return get_sync_client(url=local_stack_url, api_key="")


def test_a_new_thread_has_the_official_fields_and_null_values(
    client: SyncLangGraphClient,
) -> None:
    # GIVEN / WHEN a thread is created
    thread = client.threads.create(metadata={"user": "ada"})

    # THEN it carries every field the official server sends, values null until a run
    assert set(thread) >= THREAD_KEYS
    assert thread["values"] is None
    assert thread["status"] == "idle"
    assert client.threads.get(thread["thread_id"])["values"] is None


def test_the_state_of_an_empty_thread_has_no_checkpoint(client: SyncLangGraphClient) -> None:
    # GIVEN a thread that never ran
    thread = client.threads.create()

    # WHEN its state is read
    state = client.threads.get_state(thread["thread_id"])

    # THEN there is no checkpoint yet (null, not an object of nulls) and no values
    assert set(state) >= STATE_KEYS
    assert state["checkpoint"] is None
    assert state["checkpoint_id"] is None
    assert state["values"] == {}


def test_join_and_wait_answer_with_location_headers(local_stack_url: str) -> None:
    # GIVEN a thread
    with httpx.Client(base_url=local_stack_url, timeout=60) as http:
        thread_id = http.post("/threads", json={}).json()["thread_id"]

        # WHEN a background run is created and joined, and a second run is waited on
        created = http.post(
            f"/threads/{thread_id}/runs", json={"assistant_id": "support", "input": BILLING}
        )
        run_id = created.json()["run_id"]
        joined = http.get(f"/threads/{thread_id}/runs/{run_id}/join")
        waited = http.post(
            f"/threads/{thread_id}/runs/wait", json={"assistant_id": "support", "input": BILLING}
        )

    # THEN the run's address is in Content-Location, and join's address in Location (the SDK
    # reconnects there when a long answer is cut off)
    assert created.headers["content-location"] == f"/threads/{thread_id}/runs/{run_id}"
    assert joined.headers["content-location"] == f"/threads/{thread_id}/runs/{run_id}"
    assert joined.headers["location"] == f"/threads/{thread_id}/runs/{run_id}/join"
    waited_run = waited.headers["content-location"].rsplit("/", 1)[1]
    assert waited.headers["location"] == f"/threads/{thread_id}/runs/{waited_run}/join"


def test_the_sdk_learns_the_run_from_the_creation_headers(client: SyncLangGraphClient) -> None:
    # GIVEN a thread
    thread = client.threads.create()
    seen: list[Any] = []

    # WHEN a run is created with the SDK's on_run_created callback
    run = client.runs.create(
        thread["thread_id"], "support", input=BILLING, on_run_created=seen.append
    )

    # THEN the callback got the run and thread ids parsed from Content-Location
    assert len(seen) == 1
    assert seen[0]["run_id"] == run["run_id"]
    assert seen[0]["thread_id"] == thread["thread_id"]
    client.runs.join(thread["thread_id"], run["run_id"])


def test_an_interrupt_has_the_official_shapes(client: SyncLangGraphClient) -> None:
    # GIVEN a thread whose run asks a human (account cancellation escalates)
    thread_id = client.threads.create()["thread_id"]
    run = client.runs.create(thread_id, "support", input=CANCEL)

    # WHEN it is joined and the thread is read
    values = client.runs.join(thread_id, run["run_id"])
    thread = client.threads.get(thread_id)
    state = fields(client.threads.get_state(thread_id))

    # THEN the run succeeded, the thread is interrupted, and the interrupt is listed where
    # the official server lists it
    assert client.runs.get(thread_id, run["run_id"])["status"] == "success"
    assert {"value", "id"} <= set(values["__interrupt__"][0])
    assert thread["status"] == "interrupted"
    [(task_id, thread_interrupts)] = thread["interrupts"].items()
    assert thread_interrupts[0]["value"]["type"] == "approval"
    assert set(state) >= STATE_KEYS
    assert state["next"] == ["escalate"]
    [task] = state["tasks"]
    assert task["id"] == task_id
    assert task["path"] == ["__pregel_pull", "escalate"]
    assert task["interrupts"][0]["value"]["type"] == "approval"
    assert state["interrupts"][0]["id"] == task["interrupts"][0]["id"]
    assert state["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    assert state["parent_checkpoint_id"] == state["parent_checkpoint"]["checkpoint_id"]

    # AND a run resuming it with a command ends the interrupt
    resumed = client.runs.wait(thread_id, "support", command={"resume": "yes"})
    assert "__interrupt__" not in resumed
    assert client.threads.get(thread_id)["status"] == "idle"


def test_update_state_returns_the_checkpoint_as_the_official_server(
    client: SyncLangGraphClient,
) -> None:
    # GIVEN a thread with one finished run
    thread_id = client.threads.create()["thread_id"]
    client.runs.wait(thread_id, "support", input=BILLING)

    # WHEN its state is updated as a node
    answer = fields(
        client.threads.update_state(thread_id, {"route": "general"}, as_node="classify")
    )

    # THEN the new checkpoint is given as checkpoint, configurable and checkpoint_id
    assert answer["checkpoint"]["checkpoint_id"] == answer["checkpoint_id"]
    assert answer["configurable"]["checkpoint_id"] == answer["checkpoint_id"]
    assert fields(client.threads.get_state(thread_id))["checkpoint_id"] == answer["checkpoint_id"]


def test_run_metadata_includes_the_graph_and_thread_and_filters_history(
    client: SyncLangGraphClient,
) -> None:
    # GIVEN a thread with metadata and a run with its own metadata
    marker = str(uuid.uuid4())
    thread_id = client.threads.create(metadata={"user": "ada"})["thread_id"]
    run = client.runs.create(thread_id, "support", input=BILLING, metadata={"purpose": marker})
    client.runs.join(thread_id, run["run_id"])

    # WHEN the run and the history filtered by the run's metadata are read
    metadata = fields(client.runs.get(thread_id, run["run_id"])["metadata"])
    history = client.threads.get_history(thread_id, metadata={"purpose": marker})

    # THEN the run's metadata holds the graph, the thread's metadata and its own, and every
    # checkpoint the run wrote is found by it
    assert metadata["graph_id"] == "support"
    assert metadata["assistant_id"] == "support"
    assert metadata["user"] == "ada"
    assert metadata["purpose"] == marker
    assert len(history) >= 3
    assert {fields(h["metadata"])["run_id"] for h in history} == {run["run_id"]}


def test_cancelling_a_finished_run_is_not_found(client: SyncLangGraphClient) -> None:
    # GIVEN a finished run
    thread_id = client.threads.create()["thread_id"]
    run = client.runs.create(thread_id, "support", input=BILLING)
    client.runs.join(thread_id, run["run_id"])

    # WHEN / THEN cancelling it raises the SDK's NotFoundError, as on the official server
    with pytest.raises(NotFoundError):
        client.runs.cancel(thread_id, run["run_id"])


def test_an_assistant_has_a_graph_and_schemas(client: SyncLangGraphClient) -> None:
    # GIVEN the support assistant
    assistant_id = client.assistants.search(graph_id="support")[0]["assistant_id"]

    # WHEN its graph, schemas and subgraphs are read
    graph = fields(client.assistants.get_graph(assistant_id))
    schemas = fields(client.assistants.get_schemas(assistant_id))
    subgraphs = client.assistants.get_subgraphs(assistant_id)

    # THEN they have the official shapes: nodes/edges, the five schemas, no subgraphs
    nodes = {node["id"] for node in graph["nodes"]}
    assert {"__start__", "classify", "escalate", "finalize", "__end__"} <= nodes
    assert {"source", "target"} <= set(graph["edges"][0])
    assert schemas["graph_id"] == "support"
    assert "messages" in schemas["input_schema"]["properties"]
    assert "route" in schemas["state_schema"]["properties"]
    assert {"output_schema", "config_schema", "context_schema"} <= set(schemas)
    assert subgraphs == {}


def test_the_platform_assistant_id_names_the_same_graph(client: SyncLangGraphClient) -> None:
    # GIVEN the id LangGraph Platform uses for the support graph's assistant
    thread_id = client.threads.create()["thread_id"]

    # WHEN it is used to read the assistant and to run
    assistant = client.assistants.get(PLATFORM_SUPPORT_ID)
    values = fields(client.runs.wait(thread_id, PLATFORM_SUPPORT_ID, input=BILLING))

    # THEN it is the support graph
    assert assistant["graph_id"] == "support"
    assert values["route"] == "billing:done"
    assert client.runs.list(thread_id)[0]["assistant_id"] == "support"

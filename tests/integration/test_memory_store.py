"""The long-term memory store through the run path: a graph node, run by the step worker on
moto, writes a memory with ``get_store()`` in a run on one thread, and a run on another
thread (another worker, any container) reads it, as graphs written for the official server
expect."""

from __future__ import annotations

import uuid
from typing import Any, TypedDict

import pytest
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from functions.memory import make_memory
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


class MemoryState(TypedDict, total=False):
    user: str
    remember: str
    recalled: list[str]
    seen_by_subgraph: list[str]


def _memory_factory() -> Any:
    """``remember`` (get_store) -> ``recall`` (a ``store`` argument) -> ``deeper`` (a subgraph
    reading ``runtime.store``)."""

    def remember(state: MemoryState) -> dict[str, Any]:
        store = get_store()
        if state.get("remember"):
            key = uuid.uuid5(uuid.NAMESPACE_URL, state["remember"]).hex
            store.put(("memories", state["user"]), key, {"text": state["remember"]})
        return {}

    def recall(state: MemoryState, *, store: BaseStore) -> dict[str, Any]:
        found = store.search(("memories", state["user"]), limit=50)
        return {"recalled": sorted(item.value["text"] for item in found)}

    def inner(state: MemoryState, runtime: Runtime[Any]) -> dict[str, Any]:
        assert runtime.store is not None
        found = runtime.store.search(("memories",), limit=50)
        return {"seen_by_subgraph": sorted(item.value["text"] for item in found)}

    def factory(checkpointer: Any, model: Any) -> Any:
        sub = StateGraph(MemoryState)
        sub.add_node("inner", inner)
        sub.add_edge(START, "inner")
        sub.add_edge("inner", END)
        builder = StateGraph(MemoryState)
        builder.add_node("remember", remember)
        builder.add_node("recall", recall)
        builder.add_node("deeper", sub.compile())
        builder.add_edge(START, "remember")
        builder.add_edge("remember", "recall")
        builder.add_edge("recall", "deeper")
        builder.add_edge("deeper", END)
        return builder.compile(checkpointer=checkpointer)

    return factory


@pytest.fixture
def memory_stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    from graphs import registry

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setitem(registry.GRAPHS, "memory", _memory_factory())
    stack = Stack(moto_endpoint, memory_table=f"memory-{uuid.uuid4().hex[:10]}")
    store = make_memory(stack.settings)
    assert store is not None
    store.setup()
    return stack


def _run(stack: Stack, **input: Any) -> dict[str, Any]:
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="memory", input=input)
    stack.pump()
    got = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert got["status"] == "success", got
    return dict(stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body)


def test_a_memory_written_on_one_thread_is_read_on_another(memory_stack: Stack) -> None:
    # GIVEN a run on thread A whose node stores a memory for user u1
    first = _run(memory_stack, user="u1", remember="likes green tea")
    assert first["recalled"] == ["likes green tea"]

    # WHEN a run on thread B (a new thread) asks about u1, remembering something else
    second = _run(memory_stack, user="u1", remember="lives in Porto")

    # THEN it recalls both (the first from the table), and the subgraph sees them too
    assert second["recalled"] == ["likes green tea", "lives in Porto"]
    assert second["seen_by_subgraph"] == ["likes green tea", "lives in Porto"]
    # AND another user's namespace is another user's
    other = _run(memory_stack, user="u2")
    assert other["recalled"] == []


def test_a_cold_worker_reads_what_another_wrote(
    memory_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions import graph_loader
    from tests.conftest import forget_cached_state

    # GIVEN a memory written by one run
    _run(memory_stack, user="u1", remember="prefers email")
    # WHEN the next run lands on a fresh container (no compiled graph, no clients kept)
    monkeypatch.setattr(graph_loader, "_CACHE", {})
    forget_cached_state()
    later = _run(memory_stack, user="u1")
    # THEN it reads the memory from the table
    assert later["recalled"] == ["prefers email"]


def test_without_a_memory_table_graphs_get_no_store(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphs import registry

    # GIVEN a stack with no memory table, and a node that looks for a store
    assert not stack.settings.memory_table
    seen: list[object] = []

    def look(state: MemoryState) -> dict[str, Any]:
        seen.append(get_store())
        return {}

    def factory(checkpointer: Any, model: Any) -> Any:
        builder = StateGraph(MemoryState)
        builder.add_node("look", look)
        builder.add_edge(START, "look")
        builder.add_edge("look", END)
        return builder.compile(checkpointer=checkpointer)

    monkeypatch.setitem(registry.GRAPHS, "memory", factory)
    # WHEN it runs THEN it finds none, as before the store existed
    _run(stack, user="u1")
    assert seen == [None]


def test_a_node_gets_forgets_and_lists_every_memory(
    memory_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphs import registry

    seen: dict[str, Any] = {}

    def manage(state: MemoryState) -> dict[str, Any]:
        store = get_store()
        user = state["user"]
        if state.get("remember"):
            store.put(("memories", user), "latest", {"text": state["remember"]})
            return {}
        item = store.get(("memories", user), "latest")
        seen["got"] = item.value["text"] if item is not None else None
        store.delete(("memories", user), "latest")
        seen["after_delete"] = store.get(("memories", user), "latest")
        # Every memory of every user: a search under no namespace at all.
        seen["everyone"] = sorted(i.value["text"] for i in store.search((), limit=100))
        return {}

    def factory(checkpointer: Any, model: Any) -> Any:
        builder = StateGraph(MemoryState)
        builder.add_node("manage", manage)
        builder.add_edge(START, "manage")
        builder.add_edge("manage", END)
        return builder.compile(checkpointer=checkpointer)

    monkeypatch.setitem(registry.GRAPHS, "memory", factory)
    # GIVEN memories of two users, written by runs
    _run(memory_stack, user="u1", remember="likes green tea")
    _run(memory_stack, user="u2", remember="lives in Porto")
    # WHEN a run reads u1's memory by key, deletes it and lists what is left
    _run(memory_stack, user="u1")
    # THEN it got it, it is gone, and u2's remains
    assert seen == {"got": "likes green tea", "after_delete": None, "everyone": ["lives in Porto"]}

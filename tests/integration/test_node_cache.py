"""Node caching through the run path: a graph node with a ``CachePolicy``, run by the step
worker on moto, is served from the DynamoDB node cache on a later run (another thread, any
worker) instead of running again, until its TTL."""

from __future__ import annotations

import uuid
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy

from functions import clock
from functions.cache import make_cache
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

TTL_S = 600


class LookupState(TypedDict, total=False):
    query: str
    answer: str
    reply: str


def _lookup_factory(calls: list[str]) -> Any:
    """``lookup`` (expensive, cached for TTL_S) -> ``reply``; ``calls`` counts lookups."""

    def lookup(state: LookupState) -> dict[str, Any]:
        calls.append(state["query"])
        return {"answer": f"forecast for {state['query']}: sunny, call #{len(calls)}"}

    def reply(state: LookupState) -> dict[str, Any]:
        return {"reply": f"Here you go: {state['answer']}"}

    def factory(checkpointer: Any, model: Any) -> Any:
        builder = StateGraph(LookupState)
        builder.add_node("lookup", lookup, cache_policy=CachePolicy(ttl=TTL_S))
        builder.add_node("reply", reply)
        builder.add_edge(START, "lookup")
        builder.add_edge("lookup", "reply")
        builder.add_edge("reply", END)
        return builder.compile(checkpointer=checkpointer)

    return factory


@pytest.fixture
def cached_stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    stack = Stack(moto_endpoint, cache_table=f"cache-{uuid.uuid4().hex[:10]}")
    cache = make_cache(stack.settings)
    assert cache is not None
    cache.setup()
    return stack


def _run(stack: Stack, query: str) -> dict[str, Any]:
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="lookup", input={"query": query})
    stack.pump()
    got = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert got["status"] == "success", got
    values = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    return dict(values)


def test_the_cache_serves_a_second_runs_node_without_calling_it(
    cached_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphs import registry

    # GIVEN a graph whose expensive node has a CachePolicy, on a stack with a node cache
    calls: list[str] = []
    monkeypatch.setitem(registry.GRAPHS, "lookup", _lookup_factory(calls))

    # WHEN two runs on two threads ask the same, through the step worker
    first = _run(cached_stack, "Lisbon")
    second = _run(cached_stack, "Lisbon")

    # THEN the node ran once: the second run was served from the cache
    assert calls == ["Lisbon"]
    # AND both runs got the same output
    assert first == second
    assert first["reply"] == "Here you go: forecast for Lisbon: sunny, call #1"

    # AND another input is another entry: the node runs for it
    other = _run(cached_stack, "Porto")
    assert calls == ["Lisbon", "Porto"]
    assert other["answer"] == "forecast for Porto: sunny, call #2"


def test_a_cold_worker_is_served_what_another_cached(
    cached_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions import graph_loader
    from graphs import registry
    from tests.conftest import forget_cached_state

    # GIVEN a run whose node result went to the cache
    calls: list[str] = []
    monkeypatch.setitem(registry.GRAPHS, "lookup", _lookup_factory(calls))
    first = _run(cached_stack, "Faro")

    # WHEN the next run lands on a fresh container (no compiled graph, no clients kept)
    monkeypatch.setattr(graph_loader, "_CACHE", {})
    forget_cached_state()
    second = _run(cached_stack, "Faro")

    # THEN it was served from the table, not from anything in the process
    assert calls == ["Faro"]
    assert second == first


def test_an_entry_past_its_ttl_runs_the_node_again(
    cached_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphs import registry

    # GIVEN a cached node result, on the run path's clock
    calls: list[str] = []
    monkeypatch.setitem(registry.GRAPHS, "lookup", _lookup_factory(calls))
    start = clock.now()
    monkeypatch.setattr(clock, "now", lambda: start)
    _run(cached_stack, "Braga")

    # WHEN a run asks the same after the CachePolicy's TTL
    monkeypatch.setattr(clock, "now", lambda: start + TTL_S + 1)
    later = _run(cached_stack, "Braga")

    # THEN the node ran again, and its new result is what the run got
    assert calls == ["Braga", "Braga"]
    assert later["answer"] == "forecast for Braga: sunny, call #2"


def test_without_a_cache_table_the_node_runs_every_time(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphs import registry

    # GIVEN a stack with no node cache configured
    assert not stack.settings.cache_table
    calls: list[str] = []
    monkeypatch.setitem(registry.GRAPHS, "lookup", _lookup_factory(calls))
    # WHEN two runs ask the same THEN the CachePolicy is inert: both run the node
    first = _run(stack, "Evora")
    second = _run(stack, "Evora")
    assert calls == ["Evora", "Evora"]
    assert first["reply"] != second["reply"]

"""Real graphs, run one superstep per invocation with a fresh DynamoDBSaver each time, end in
exactly the state and history that LangGraph's InMemorySaver gives for the same run."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from functions.checkpoint import DynamoDBSaver
from tests.checkpoint import graphs

pytestmark = pytest.mark.integration


def _fresh(saver: DynamoDBSaver) -> DynamoDBSaver:
    """A new saver on the same table, as a new Lambda invocation would build."""
    return DynamoDBSaver(
        saver.table_name,
        bucket_name=saver.bucket_name,
        dynamodb_client=saver.client,
        s3_client=saver.s3,
    )


def _compare(build: Any, inputs: dict[str, Any], saver: DynamoDBSaver) -> tuple[Any, Any]:
    memory = InMemorySaver()
    memory_config = graphs.run_stepwise(lambda: build(memory), inputs)
    ours_config = graphs.run_stepwise(lambda: build(_fresh(saver)), inputs)
    return (
        (build(memory), memory_config),
        (build(_fresh(saver)), ours_config),
    )


def test_chat_graph_with_reducers_branches_and_interrupts_matches_in_memory(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a graph with add_messages and operator.add channels, parallel branches and
    # approval interrupts, run superstep by superstep on each saver
    (memory_graph, memory_config), (our_graph, our_config) = _compare(
        lambda s: graphs.chat_graph(s, rounds=7), graphs.chat_input(), saver
    )

    # WHEN both threads are read back
    ours = our_graph.get_state(our_config)
    theirs = memory_graph.get_state(memory_config)

    # THEN the final state and the whole history are the same
    assert ours.values == theirs.values
    assert len(ours.values["messages"]) == 1 + 7 + 2  # hello, 7 replies, 2 decisions
    assert graphs.history(our_graph, our_config) == graphs.history(memory_graph, memory_config)


def test_subgraph_namespaces_match_in_memory(saver: DynamoDBSaver) -> None:
    # GIVEN an outer graph whose subgraph node interrupts inside its own namespace
    (memory_graph, memory_config), (our_graph, our_config) = _compare(
        lambda s: graphs.subgraph_graph(s, turns=3), {"items": [], "turns": 0}, saver
    )

    # WHEN both threads are read back
    ours = our_graph.get_state(our_config)
    theirs = memory_graph.get_state(memory_config)

    # THEN values and history match, answers from inside the subgraph included
    assert ours.values == theirs.values
    assert "answer approve" in ours.values["items"]
    assert graphs.history(our_graph, our_config) == graphs.history(memory_graph, memory_config)


def test_subgraph_state_is_stored_under_its_namespace(saver: DynamoDBSaver) -> None:
    # GIVEN a subgraph stopped at its interrupt
    config = {"configurable": {"thread_id": "sub-ns"}}
    graph = graphs.subgraph_graph(saver, turns=1)
    graph.invoke({"items": [], "turns": 0}, config)

    # WHEN the parent state is read with its subgraphs
    state = graphs.subgraph_graph(_fresh(saver), turns=1).get_state(config, subgraphs=True)

    # THEN the child task's state comes from its own namespace, with its own values
    child = next(task for task in state.tasks if task.name == "child")
    assert child.state is not None
    assert child.state.values == {"items": ["outer", "inner-1 of 1"]}
    namespaces = {
        t.config["configurable"]["checkpoint_ns"]
        for t in _fresh(saver).list({"configurable": {"thread_id": "sub-ns"}})
    }
    assert "" in namespaces
    assert any(ns.startswith("child:") for ns in namespaces)


def test_delta_channel_graph_matches_in_memory(saver: DynamoDBSaver) -> None:
    # GIVEN a graph whose list channel is a LangGraph DeltaChannel (snapshot every 3 updates)
    (memory_graph, memory_config), (our_graph, our_config) = _compare(
        lambda s: graphs.delta_graph(s, steps=10), {"notes": [], "n": 0}, saver
    )

    # WHEN both threads are read back
    ours = our_graph.get_state(our_config)
    theirs = memory_graph.get_state(memory_config)

    # THEN the rebuilt channel holds every note, as in memory
    assert len(ours.values["notes"]) == 10
    assert ours.values == theirs.values
    assert graphs.history(our_graph, our_config) == graphs.history(memory_graph, memory_config)


def test_fork_from_an_old_checkpoint_matches_in_memory(saver: DynamoDBSaver) -> None:
    # GIVEN the same finished chat thread on both savers
    (memory_graph, memory_config), (_, our_config) = _compare(
        lambda s: graphs.chat_graph(s, rounds=4), graphs.chat_input(), saver
    )

    def fork(graph: Any, config: dict[str, Any]) -> Any:
        old = next(s for s in graph.get_state_history(config) if s.metadata.get("step") == 5)
        forked = graph.update_state(old.config, {"log": ["edited"]}, as_node="fan_a")
        for _chunk in graph.stream(None, forked, interrupt_after="*"):
            pass
        return graph.get_state(config)

    # WHEN both are forked from an old checkpoint (its descendants were built from deltas)
    ours = fork(graphs.chat_graph(_fresh(saver), rounds=4), our_config)
    theirs = fork(memory_graph, memory_config)

    # THEN the forked branch reads the same
    assert ours.values == theirs.values
    assert ours.next == theirs.next

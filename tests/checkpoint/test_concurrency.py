"""One saver shared by several worker threads, as in the local stack (one cached saver per
process): each thread's graph must end exactly as it does alone on InMemorySaver."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from functions.checkpoint import DynamoDBSaver
from tests.checkpoint import graphs

pytestmark = pytest.mark.integration

Build = Callable[[Any], Any]

_CASES: list[tuple[Build, dict[str, Any]]] = [
    (lambda s: graphs.chat_graph(s, rounds=6), graphs.chat_input()),
    (lambda s: graphs.chat_graph(s, rounds=4), graphs.chat_input()),
    (lambda s: graphs.subgraph_graph(s, turns=2), {"items": [], "turns": 0}),
    (lambda s: graphs.delta_graph(s, steps=8), {"notes": [], "n": 0}),
    (lambda s: graphs.chat_graph(s, rounds=5), graphs.chat_input()),
    (lambda s: graphs.delta_graph(s, steps=6), {"notes": [], "n": 0}),
]


def _outcome(build: Build, saver: Any, config: dict[str, Any]) -> tuple[Any, Any]:
    graph = build(saver)
    return graph.get_state(config).values, graphs.history(graph, config)


def test_threads_sharing_one_saver_end_as_in_memory(saver: DynamoDBSaver) -> None:
    # GIVEN six graphs (parallel branches, interrupts, a subgraph, DeltaChannels), each on
    # its own thread id, and one saver instance shared by every worker thread
    shared = DynamoDBSaver(
        saver.table_name,
        bucket_name=saver.bucket_name,
        dynamodb_client=saver.client,
        s3_client=saver.s3,
    )
    thread_ids = [f"concurrent-{i}-{uuid.uuid4().hex[:6]}" for i in range(len(_CASES))]

    def run(i: int) -> dict[str, Any]:
        build, inputs = _CASES[i]
        return graphs.run_stepwise(lambda: build(shared), inputs, thread_id=thread_ids[i])

    # WHEN four worker threads run them superstep by superstep at the same time
    with ThreadPoolExecutor(max_workers=4) as pool:
        configs = list(pool.map(run, range(len(_CASES))))

    # THEN every thread ends with the same values and history as the same run alone on
    # InMemorySaver, read both through the shared saver and through a fresh one
    fresh = DynamoDBSaver(
        saver.table_name,
        bucket_name=saver.bucket_name,
        dynamodb_client=saver.client,
        s3_client=saver.s3,
    )
    for (build, inputs), config in zip(_CASES, configs, strict=True):
        memory = InMemorySaver()
        memory_config = graphs.run_stepwise(lambda b=build, m=memory: b(m), inputs)
        expected = _outcome(build, memory, memory_config)
        assert _outcome(build, shared, config) == expected
        assert _outcome(build, fresh, config) == expected

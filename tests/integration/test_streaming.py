"""Run streams on moto: what the step worker publishes and what the stream routes serve.

The reference is LangGraph's own ``graph.stream`` of the same graph in one process with an
in-memory saver, named and shaped as the official server sends it (tests/stream_parity.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from functions.checkpointer import make_checkpointer
from functions.streaming.http import StreamServices, answer
from functions.streaming.log import StreamLog
from functions.streaming.service import StreamTail
from tests.integration.conftest import KEY_A, Stack
from tests.integration.test_run_endings import FailAws
from tests.stream_parity import comparable, parse_sse, reference_stream

pytestmark = pytest.mark.integration

BILLING: dict[str, Any] = {
    "messages": [{"role": "user", "content": "I was charged twice on my invoice"}]
}
RESEARCH: dict[str, Any] = {"messages": [{"role": "user", "content": "What is a superstep?"}]}
STEP_MODES = ["values", "updates", "custom", "messages-tuple", "tasks", "checkpoints", "debug"]


@pytest.fixture
def fail_aws(stack: Stack) -> Iterator[FailAws]:
    injector = FailAws()
    injector.attach(make_checkpointer(stack.settings).client)
    yield injector
    injector.detach()


def _log(stack: Stack) -> StreamLog:
    return StreamLog(stack.settings.runtime_table)


def _tail(
    stack: Stack, thread_id: str, run_id: str, **options: Any
) -> list[tuple[str, Any, str | None]]:
    """The SSE stream of a run that has ended, as the stream route serves it."""
    run = stack.store.get_run(thread_id, run_id)
    assert run is not None
    options = {"modes": None, "last_event_id": None, **options}
    tail = StreamTail(
        stack.runs, _log(stack), run, max_s=30, poll_s=0.01, heartbeat_s=60, **options
    )
    return parse_sse(b"".join(tail))


def _streamed_run(
    stack: Stack, graph: str, graph_input: Any, modes: list[str], **body: Any
) -> tuple[str, str]:
    thread_id = stack.create_thread()
    run = stack.start_run(
        thread_id,
        assistant_id=graph,
        input=graph_input,
        stream_mode=modes,
        stream_resumable=True,
        **body,
    )
    stack.pump()
    return thread_id, run["run_id"]


@pytest.mark.parametrize(
    ("graph", "graph_input", "subgraphs"),
    [
        ("support", BILLING, False),
        ("research", RESEARCH, True),
        ("research", {**RESEARCH, "review": True}, True),
    ],
    ids=["support", "research-subgraphs", "research-interrupt"],
)
def test_a_streamed_run_publishes_what_graph_stream_gives_in_one_process(
    stack: Stack, graph: str, graph_input: Any, subgraphs: bool
) -> None:
    # GIVEN the official server's events for the graph run in one process
    expected = reference_stream(graph, graph_input, STEP_MODES, subgraphs=subgraphs)

    # WHEN the same run goes through the worker, one superstep per invocation
    thread_id, run_id = _streamed_run(
        stack, graph, graph_input, STEP_MODES, stream_subgraphs=subgraphs
    )
    events = _tail(stack, thread_id, run_id)

    # THEN the stream starts with metadata, then the same events in the same order and shape
    assert events[0][0] == "metadata"
    assert events[0][1] == {"run_id": run_id, "attempt": 1}
    got = [(name, data) for name, data, _ in events[1:]]
    assert comparable(got) == comparable(expected)
    # ... and every event has its own id
    ids = [event_id for _, _, event_id in events]
    assert None not in ids
    assert len(set(ids)) == len(ids)


def test_the_interrupt_shows_in_values_when_updates_are_not_asked_for(stack: Stack) -> None:
    # GIVEN a run that stops at interrupt(), streamed with values only
    graph_input = {**RESEARCH, "review": True}
    thread_id, run_id = _streamed_run(stack, "research", graph_input, ["values", "custom"])

    # WHEN its stream is read
    events = _tail(stack, thread_id, run_id)

    # THEN the interrupt is there once, as the official server (langgraph-api 0.16.7) shows
    # it: in the step's last values, with the state, the Interrupt whole; nothing else differs
    interrupts = [d for n, d, _ in events if n == "values" and "__interrupt__" in d]
    assert len(interrupts) == 1
    assert "messages" in interrupts[0]
    [interrupt] = interrupts[0]["__interrupt__"]
    assert interrupt["value"]["question"]
    assert set(interrupt) == {"value", "id", "response_schema"}
    expected = reference_stream("research", graph_input, ["values", "custom"])
    assert comparable([(n, d) for n, d, _ in events[1:]]) == comparable(expected)


def test_a_run_without_a_stream_mode_writes_no_events(stack: Stack) -> None:
    # GIVEN runs started as the SDK's runs.create and runs.wait start them (stream_mode
    # "values" by default) and one with no stream_mode at all
    thread_id = stack.create_thread()
    plain = stack.start_run(thread_id, input=BILLING)
    stack.pump()
    default = stack.start_run(thread_id, input=BILLING, stream_mode="values")
    stack.pump()
    waited = stack.api(
        "POST",
        f"/threads/{thread_id}/runs/wait",
        {"assistant_id": "support", "input": BILLING, "stream_mode": ["updates"]},
    )
    stack.pump()

    # THEN none of them wrote to the event log
    run_ids = [
        plain["run_id"],
        default["run_id"],
        waited.headers["Content-Location"].rsplit("/", 1)[-1],
    ]
    assert all(_log(stack).read(run_id) == [] for run_id in run_ids)


def test_joining_a_run_that_published_nothing_gives_its_final_values(stack: Stack) -> None:
    # GIVEN a finished background run started without asking for a stream
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    stack.pump()

    # WHEN its stream is joined
    events = _tail(stack, thread_id, run["run_id"])

    # THEN it gets metadata and the final values, never a silently empty stream
    assert [name for name, _, _ in events] == ["metadata", "values"]
    assert events[1][1]["messages"][-1]["type"] == "ai"


@pytest.mark.parametrize("write", range(1, 10))
def test_a_step_retried_after_failing_at_any_checkpoint_write_publishes_its_events_once(
    stack: Stack,
    fail_aws: FailAws,
    write: int,
) -> None:
    # GIVEN the stream of a fault-free run
    modes = ["values", "updates", "messages-tuple"]
    reference_thread, reference_run = _streamed_run(stack, "support", BILLING, modes)
    reference = comparable([(n, d) for n, d, _ in _tail(stack, reference_thread, reference_run)])

    # WHEN the run's ``write``-th checkpoint write fails after the step published its
    # tokens, and the step is retried
    seen = {"n": 0}

    def nth_checkpoint_write(params: dict[str, Any]) -> bool:
        if params.get("TableName") != stack.settings.checkpoint_table:
            return False
        seen["n"] += 1
        return seen["n"] == write

    fail_aws.fail("PutItem", when=nth_checkpoint_write)
    thread_id, run_id = _streamed_run(stack, "support", BILLING, modes)

    # THEN its stream holds every event exactly once, as the fault-free run's
    assert seen["n"] >= write
    events = _tail(stack, thread_id, run_id)
    assert comparable([(n, d) for n, d, _ in events]) == reference


def test_a_stream_resumed_from_any_event_id_gets_the_rest_exactly_once(stack: Stack) -> None:
    # GIVEN a finished streamed run and its whole stream
    thread_id, run_id = _streamed_run(
        stack, "research", RESEARCH, STEP_MODES, stream_subgraphs=True
    )
    whole = _tail(stack, thread_id, run_id)

    # WHEN it is joined again from each event's id
    for k, (_, _, event_id) in enumerate(whole):
        rest = _tail(stack, thread_id, run_id, last_event_id=event_id)

        # THEN it gets exactly the events after that one
        assert rest == whole[k + 1 :]


def test_a_join_can_pick_modes_out_of_what_the_run_publishes(stack: Stack) -> None:
    thread_id, run_id = _streamed_run(
        stack, "support", BILLING, ["values", "updates", "messages-tuple"]
    )

    events = _tail(stack, thread_id, run_id, modes=["updates"])

    assert [n for n, _, _ in events] == ["metadata", "updates", "updates", "updates"]


def test_model_tokens_are_written_in_few_batches(stack: Stack) -> None:
    # GIVEN a run whose reply streams word by word
    _thread_id, run_id = _streamed_run(stack, "support", BILLING, ["messages-tuple"])

    # THEN its tokens came out one by one, but were written in items of at most 4 KB
    batches = _log(stack).read(run_id)
    tokens = [e for b in batches for e in b.events if e.name == "messages"]
    assert len(tokens) > 10
    assert len(batches) < len(tokens)
    assert all(sum(len(e.name) + len(e.data) for e in b.events) <= 4096 for b in batches)


def _services(stack: Stack) -> StreamServices:
    return StreamServices(threads=stack.services.threads, runs=stack.runs, log=_log(stack))


@pytest.mark.parametrize("mode", ["events", "tools", "nonsense"])
def test_an_unsupported_stream_mode_is_a_422_saying_so(stack: Stack, mode: str) -> None:
    thread_id = stack.create_thread()

    background = stack.api(
        "POST",
        f"/threads/{thread_id}/runs",
        {"assistant_id": "support", "stream_mode": ["values", mode]},
    )
    streamed = answer(
        _services(stack),
        "POST",
        f"/threads/{thread_id}/runs/stream",
        {"x-api-key": KEY_A},
        b'{"assistant_id": "support", "stream_mode": "%s"}' % mode.encode(),
    )
    body = b"".join(streamed.body)

    assert background.status == 422
    assert f"stream_mode {mode!r} is not supported" in str(background.body)
    assert streamed.status == 422
    assert f"stream_mode {mode!r} is not supported".encode() in body


def test_stream_routes_answer_with_the_official_headers(stack: Stack) -> None:
    thread_id = stack.create_thread()
    streamed = answer(
        _services(stack),
        "POST",
        f"/threads/{thread_id}/runs/stream",
        {"x-api-key": KEY_A},
        b'{"assistant_id": "support", "input": {"messages": []}}',
    )
    headers = dict(streamed.headers)
    run_path = headers["Content-Location"]

    assert streamed.status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert run_path.startswith(f"/threads/{thread_id}/runs/")
    assert headers["Location"] == f"{run_path}/stream"
    close = getattr(streamed.body, "close", None)
    if close:
        close()


def test_stream_routes_need_the_api_key(stack: Stack) -> None:
    thread_id = stack.create_thread()
    streamed = answer(
        _services(stack),
        "POST",
        f"/threads/{thread_id}/runs/stream",
        {},
        b'{"assistant_id": "support"}',
    )
    assert streamed.status == 401


def test_a_failed_run_ends_its_stream_with_an_error_event(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphs import registry
    from tests.integration.test_reliability import _graph_raising

    # GIVEN a graph whose second node raises
    monkeypatch.setitem(registry.GRAPHS, "boom", _graph_raising(ValueError("card declined")))

    # WHEN a run of it is streamed
    thread_id, run_id = _streamed_run(stack, "boom", {"n": 0}, ["values", "updates"])
    events = _tail(stack, thread_id, run_id)

    # THEN the stream shows the first step, then the error as the official server shapes it
    assert [n for n, _, _ in events] == ["metadata", "values", "updates", "values", "error"]
    assert events[-1][1] == {"error": "ValueError", "message": "card declined"}
    assert events[-1][2] is not None


def test_the_legacy_messages_mode_accumulates_each_message(stack: Stack) -> None:
    thread_id, run_id = _streamed_run(stack, "support", BILLING, ["messages"])

    events = _tail(stack, thread_id, run_id)

    names = [n for n, _, _ in events]
    assert names.count("messages/metadata") == 2  # the classifier's reply, the specialist's
    partials = [d[0]["content"] for n, d, _ in events if n == "messages/partial"]
    assert (
        partials[-1] == "Billing here: I have looked at your account and will sort out the charge."
    )
    assert partials[-2] == "Billing here: I have looked at your account and will sort out the"


def test_a_quiet_stream_sends_comment_heartbeats(stack: Stack) -> None:
    # GIVEN a run that is pending (its steps are not delivered yet)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING, stream_mode=["updates"])
    record = stack.store.get_run(thread_id, run["run_id"])
    assert record is not None
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    # WHEN its stream is tailed for 12 quiet (simulated) seconds
    tail = StreamTail(
        stack.runs,
        _log(stack),
        record,
        modes=None,
        last_event_id=None,
        max_s=12,
        poll_s=0.05,
        heartbeat_s=5,
        clock=lambda: now[0],
        sleep=sleep,
    )
    # (empty chunks are the tail's ticks, for the server to check the client is there)
    chunks = [chunk for chunk in tail if chunk]

    # THEN metadata, two heartbeats, and then the stream ends for the client to reconnect
    assert chunks[0].startswith(b"event: metadata")
    assert chunks[1:] == [b": heartbeat\r\n\r\n"] * 2


def test_a_batch_larger_than_an_item_is_written_in_parts_and_read_whole(stack: Stack) -> None:
    from functions.streaming import log as log_module

    log = _log(stack)
    big = "x" * (log_module.PART_CHARS * 2 + 10)
    log.put("run-parts", 1, 1, 0, [("values", json.dumps({"doc": big}))])
    log.put("run-parts", 1, 1, 1, [("updates", "{}")])
    batches = log.read("run-parts")
    assert [len(b.events) for b in batches] == [1, 1]
    assert json.loads(batches[0].events[0].data)["doc"] == big
    assert str(batches[0].events[0].cursor) == "1-0"
    # AND a batch whose parts are not all written yet is not read (the next read gets it)
    table = log._table
    table.delete_item(Key={"pk": "STREAM#run-parts", "sk": batches[0].sort_key})
    assert [str(e.cursor) for b in log.read("run-parts") for e in b.events] == ["1-1"]

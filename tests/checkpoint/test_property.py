"""Property: any graph, run superstep by superstep on DynamoDBSaver, reads back exactly as the
same steps on LangGraph's InMemorySaver — state, history and pending writes.

Hypothesis draws the graph (sequential and parallel stages, loops, a subgraph, interrupts),
what each node writes (``operator.add`` lists, ``add_messages`` with ids, last-value channels,
a ``DeltaChannel``), value sizes from empty to 1.5 MB (past DynamoDB's 400 KB item limit, so
through S3), the saver's options (compression, TTL, first page size), cold savers (a new one
per superstep, as after a Lambda cold start) or one warm saver, and what happens after the
run (``update_state`` on an old checkpoint, a fork from one). Checkpoint ids, task ids and
timestamps differ between the savers; everything else is compared.

``LAMBDAGRAPH_PROPERTY_EXAMPLES`` sets the number of examples (default 30, for CI); e.g.
``LAMBDAGRAPH_PROPERTY_EXAMPLES=500 .venv/bin/pytest tests/checkpoint/test_property.py``.
"""

from __future__ import annotations

import operator
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypedDict

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, Interrupt, StateSnapshot, interrupt

from functions.checkpoint import DynamoDBSaver

pytestmark = pytest.mark.integration

# A sweep (the variable set) draws new examples each run; the default run, in CI, draws the
# same 30 every time, so its duration and verdict do not vary from run to run.
SWEEP = os.environ.get("LAMBDAGRAPH_PROPERTY_EXAMPLES")
EXAMPLES = int(SWEEP or "30")

# Value sizes: mostly small, some past the 400 KB item limit (and past 350 KB once deflated:
# random hex only deflates to about half).
_SMALL = (0, 1, 40, 700, 5_000, 30_000)
_LARGE = (200_000, 420_000, 900_000, 1_500_000)


def _size(draw: int) -> int:
    if draw < 88:
        return _SMALL[draw % len(_SMALL)]
    return _LARGE[draw % len(_LARGE)]


sizes = st.integers(0, 99).map(_size)


def _payload(seed: str, size: int, noise: bool) -> str:
    """Deterministic content: random hex (deflates to about half) or repetitive text."""
    if noise:
        return random.Random(seed).randbytes(size // 2 + 1).hex()[:size]
    return (f"{seed} the agent read the report and wrote a note. " * (size // 40 + 1))[:size]


# ---------------------------------------------------------------------- graph specs


@dataclass(frozen=True)
class NodeSpec:
    name: str
    log: int  # size of an extra element appended to ``log`` (0: just the node's marker)
    message: tuple[str, int] | None  # (form, size): "obj", "dict" or "replace" (same id)
    last: int | None  # size of the value set on the node's own last-value channel
    note: int | None  # size of an element appended to the DeltaChannel
    asks: bool  # calls interrupt() first
    noise: bool


@dataclass(frozen=True)
class SubSpec:
    name: str
    appends: tuple[int, ...]  # one inner node per element: size of what it appends
    asks: bool
    noise: bool


Stage = tuple[NodeSpec, ...] | SubSpec


@dataclass(frozen=True)
class Scenario:
    stages: tuple[Stage, ...]
    rounds: int
    input_size: int
    compress: bool
    cold: bool
    ttl: bool
    hours_between: int  # simulated time between supersteps (the TTL's compaction rule)
    read_items: int
    # After the run: ("update", history index, node index, size) or ("fork", history index).
    after: tuple[tuple[Any, ...], ...]


@st.composite
def node_specs(draw: st.DrawFn, name: str) -> NodeSpec:
    return NodeSpec(
        name=name,
        log=draw(sizes),
        message=draw(st.none() | st.tuples(st.sampled_from(["obj", "dict", "replace"]), sizes)),
        last=draw(st.none() | sizes),
        note=draw(st.none() | sizes),
        asks=draw(st.integers(0, 5)) == 0,
        noise=draw(st.booleans()),
    )


@st.composite
def stages(draw: st.DrawFn, index: int) -> Stage:
    if draw(st.integers(0, 4)) == 0:
        return SubSpec(
            name=f"sub{index}",
            appends=tuple(draw(st.lists(sizes, min_size=1, max_size=2))),
            asks=draw(st.booleans()),
            noise=draw(st.booleans()),
        )
    width = draw(st.integers(1, 3))
    return tuple(draw(node_specs(f"n{index}{j}")) for j in range(width))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.integers(1, 3))
    after = draw(
        st.lists(
            st.tuples(st.just("update"), st.integers(0, 50), st.integers(0, 5), sizes)
            | st.tuples(st.just("fork"), st.integers(0, 50)),
            max_size=2,
        )
    )
    return Scenario(
        stages=tuple(draw(stages(i)) for i in range(count)),
        rounds=draw(st.integers(1, 2)),
        input_size=draw(sizes),
        compress=draw(st.booleans()),
        cold=draw(st.booleans()),
        ttl=draw(st.booleans()),
        hours_between=draw(st.sampled_from([0, 6, 30])),
        read_items=draw(st.sampled_from([160, 16])),
        after=tuple(after),
    )


def _append_all(state: list[str], writes: list[list[str]]) -> list[str]:
    return state + [item for write in writes for item in write]


def _names(stage: Stage) -> list[str]:
    return [stage.name] if isinstance(stage, SubSpec) else [n.name for n in stage]


def _visits(state: dict[str, Any], name: str) -> int:
    return sum(1 for entry in state.get("log", []) if entry.startswith(f"{name}#"))


def _node(spec: NodeSpec) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(state: dict[str, Any]) -> dict[str, Any]:
        visit = _visits(state, spec.name)
        seed = f"{spec.name}:{visit}"
        answer = interrupt({"node": spec.name, "visit": visit}) if spec.asks else None
        log = [f"{spec.name}#{visit}#{answer}"]
        if spec.log:
            log.append(_payload(f"{seed}:log", spec.log, spec.noise))
        update: dict[str, Any] = {"log": log}
        if spec.message is not None:
            form, size = spec.message
            content = _payload(f"{seed}:msg", size, spec.noise)
            message_id = f"{spec.name}-0" if form == "replace" else f"{spec.name}-{visit}"
            if form == "dict":
                update["messages"] = [{"type": "ai", "content": content, "id": message_id}]
            else:
                update["messages"] = [AIMessage(content=content, id=message_id)]
        if spec.last is not None:
            update[f"last_{spec.name}"] = _payload(f"{seed}:last", spec.last, spec.noise)
        if spec.note is not None:
            update["notes"] = [_payload(f"{seed}:note", spec.note, spec.noise)]
        return update

    return run


def _subgraph(spec: SubSpec) -> Any:
    inner_schema = TypedDict(  # type: ignore[misc]
        f"Inner_{spec.name}",
        {"inner": Annotated[list[str], operator.add], f"out_{spec.name}": str},
    )
    builder = StateGraph(inner_schema)
    previous = START
    for i, size in enumerate(spec.appends):

        def run(state: dict[str, Any], i: int = i, size: int = size) -> dict[str, Any]:
            seen = len(state.get("inner", []))
            answer = None
            if spec.asks and i == len(spec.appends) - 1:
                answer = interrupt({"node": f"{spec.name}.{i}", "visit": seen})
            element = _payload(f"{spec.name}:{i}:{seen}", size, spec.noise)
            return {"inner": [element], f"out_{spec.name}": f"{seen}:{answer}:{element[:20]}"}

        builder.add_node(f"inner{i}", run)
        builder.add_edge(previous, f"inner{i}")
        previous = f"inner{i}"
    builder.add_edge(previous, END)
    compiled = builder.compile()

    def call(state: dict[str, Any]) -> dict[str, Any]:
        visit = _visits(state, spec.name)
        result = compiled.invoke({"inner": []})
        return {"log": [f"{spec.name}#{visit}"], f"out_{spec.name}": result[f"out_{spec.name}"]}

    return call


def build(scenario: Scenario) -> Any:
    """The scenario's graph, compiled once; ``on(graph, saver)`` runs it on a saver."""
    channels: dict[str, Any] = {
        "log": Annotated[list[str], operator.add],
        "messages": Annotated[list[AnyMessage], add_messages],
        "notes": Annotated[list[str], DeltaChannel(_append_all, snapshot_frequency=2)],
        "blob": str,
    }
    for stage in scenario.stages:
        if isinstance(stage, SubSpec):
            channels[f"out_{stage.name}"] = str
        else:
            channels.update({f"last_{n.name}": str for n in stage})
    schema = TypedDict("State", channels)  # type: ignore[misc]
    builder = StateGraph(schema)
    for stage in scenario.stages:
        if isinstance(stage, SubSpec):
            builder.add_node(stage.name, _subgraph(stage))
        else:
            for spec in stage:
                builder.add_node(spec.name, _node(spec))
    first = _names(scenario.stages[0])
    for name in first:
        builder.add_edge(START, name)
    for before, after in zip(scenario.stages, scenario.stages[1:], strict=False):
        for name in _names(after):
            builder.add_edge(_names(before), name)
    last = _names(scenario.stages[-1])
    marker = last[0]

    def route(state: dict[str, Any]) -> list[str]:
        return list(first) if _visits(state, marker) < scenario.rounds else [END]

    builder.add_conditional_edges(last[0] if len(last) == 1 else _join(builder, last), route)
    return builder.compile()


def on(graph: Any, checkpointer: BaseCheckpointSaver[Any]) -> Any:
    """The compiled graph with ``checkpointer`` (compiling per superstep costs more than
    the supersteps themselves; the saver is what is under test)."""
    return graph.copy({"checkpointer": checkpointer})


def _join(builder: Any, names: list[str]) -> str:
    """A parallel last stage joins in one node before the loop's branch."""
    builder.add_node("join", lambda state: {"log": ["join"]})
    builder.add_edge(names, "join")
    return "join"


# --------------------------------------------------------------------------- driver


def _interrupts(state: Any) -> list[Interrupt]:
    found: list[Interrupt] = []
    for task in state.tasks:
        found.extend(task.interrupts)
        if isinstance(task.state, StateSnapshot):
            found.extend(i for i in _interrupts(task.state) if i not in found)
    return found


def _answer(value: Any) -> str:
    return f"answer-{value['node']}-{value['visit']}"


def drive(
    make_graph: Callable[[], Any], config: dict[str, Any], first: Any, tick: Callable[[], None]
) -> None:
    """One superstep per invocation, as the step worker runs; interrupts answered by id;
    ``tick`` after each (time passing between invocations)."""
    thread = {"configurable": {"thread_id": config["configurable"]["thread_id"]}}
    next_input, at = first, config
    for _ in range(80):
        for _chunk in make_graph().stream(next_input, at, interrupt_after="*"):
            pass
        tick()
        at = thread
        state = make_graph().get_state(thread, subgraphs=True)
        pending = _interrupts(state)
        if pending:
            next_input = Command(resume={i.id: _answer(i.value) for i in pending})
        elif state.next:
            next_input = None
        else:
            return
    raise AssertionError("the graph did not finish within 80 supersteps")


def _attempt(action: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", action()
    except Exception as exc:  # compared between the savers: both must fail alike
        return "error", type(exc).__name__


def play(
    scenario: Scenario,
    make_graph: Callable[[], Any],
    thread_id: str,
    tick: Callable[[], None] = lambda: None,
) -> list[Any]:
    """The run, then the after-run actions; returns what each action did."""
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    inputs = {
        "messages": [HumanMessage(content="hello", id="h-0")],
        "log": [],
        "blob": _payload("input", scenario.input_size, True),
    }
    drive(make_graph, config, inputs, tick)
    outcomes: list[Any] = []
    node_names = [n for stage in scenario.stages for n in _names(stage)]
    for action in scenario.after:
        history = list(make_graph().get_state_history(config))
        old = history[action[1] % len(history)]
        if action[0] == "update":
            as_node = node_names[action[2] % len(node_names)]
            value = _payload(f"edit:{action[1]}", action[3], True)
            graph = make_graph()
            status, forked = _attempt(
                lambda g=graph, c=old.config, n=as_node, v=value: g.update_state(
                    c, {"log": [v]}, as_node=n
                )
            )
            outcomes.append((status, forked if status == "error" else None))
            if status == "ok":
                outcomes.append(_attempt(lambda f=forked: drive(make_graph, f, None, tick)))
        else:
            outcomes.append(_attempt(lambda c=old.config: drive(make_graph, c, None, tick)))
    return outcomes


# ------------------------------------------------------------------------ comparing

_INTERRUPT_ID = re.compile(r"^[0-9a-f]{32}$")


def _plain(value: Any) -> Any:
    """A value with the ids that differ between savers (interrupt ids) taken out."""
    if isinstance(value, Interrupt):
        return ("interrupt", _plain(value.value))
    if isinstance(value, dict):
        if value and all(isinstance(k, str) and _INTERRUPT_ID.match(k) for k in value):
            return ("by-interrupt", sorted(repr(_plain(v)) for v in value.values()))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _version(value: Any) -> int:
    # InMemorySaver's versions are "<32 digits>.<random>", ours plain integers: the same
    # counter either way.
    return int(str(value).split(".")[0])


def _ns_label(ns: str) -> str:
    return "|".join(part.split(":")[0] for part in ns.split("|")) if ns else ""


def _metadata(metadata: Any) -> dict[str, Any]:
    plain = dict(metadata)
    plain["parents"] = sorted(_ns_label(ns) for ns in plain.get("parents", {}))
    return _plain(plain)  # type: ignore[no-any-return]


def _task(task: Any) -> tuple[Any, ...]:
    child = task.state if isinstance(task.state, StateSnapshot) else None
    return (
        task.name,
        _plain(list(task.interrupts)),
        repr(task.error),
        _plain(task.result),
        _snapshot(child) if child is not None else None,
    )


def _snapshot(snapshot: Any) -> tuple[Any, ...]:
    return (
        _plain(snapshot.values),
        snapshot.next,
        _metadata(snapshot.metadata or {}),
        tuple(sorted((_task(t) for t in snapshot.tasks), key=repr)),
        _plain(list(snapshot.interrupts)),
        snapshot.parent_config is None,
    )


def _checkpoint(tup: Any) -> tuple[Any, ...]:
    checkpoint = tup.checkpoint
    return (
        _plain(checkpoint["channel_values"]),
        {ch: _version(v) for ch, v in checkpoint["channel_versions"].items()},
        {
            node: {ch: _version(v) for ch, v in seen.items()}
            for node, seen in checkpoint["versions_seen"].items()
        },
        sorted(checkpoint.get("updated_channels") or []),
        _metadata(tup.metadata),
        # Task ids differ between savers: compare the writes as a multiset.
        sorted(repr(_plain([ch, value])) for _task_id, ch, value in tup.pending_writes or []),
        tup.parent_config is None,
    )


def observe(graph: Any, saver: BaseCheckpointSaver[Any], thread_id: str) -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread_id}}
    by_ns: dict[str, list[Any]] = {}
    for tup in saver.list(config):
        by_ns.setdefault(tup.config["configurable"]["checkpoint_ns"], []).append(tup)
    return {
        "state": _snapshot(graph.get_state(config, subgraphs=True)),
        "history": [_snapshot(s) for s in graph.get_state_history(config)],
        "checkpoints": sorted(
            ((_ns_label(ns), [_checkpoint(t) for t in tuples]) for ns, tuples in by_ns.items()),
            key=repr,
        ),
    }


# ---------------------------------------------------------------------------- test


@pytest.fixture(scope="module")
def tables(moto_endpoint: str) -> DynamoDBSaver:
    """One table and bucket for every example (each example runs on its own thread)."""
    suffix = uuid.uuid4().hex[:12]
    saver = DynamoDBSaver(
        f"property-{suffix}",
        bucket_name=f"property-{suffix}",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
    )
    saver.setup()
    return saver


class SimClock:
    """The savers' time: starts at the real time (checkpoint ids carry it), moves on
    ``hours_between`` per superstep, and stops well inside the TTL (60 days), so that every
    checkpoint of the run stays listed, as on InMemorySaver."""

    def __init__(self, hours_between: int) -> None:
        self.start = self.now = time.time()
        self.step = hours_between * 3600

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        if self.now - self.start < 20 * 86400:
            self.now += self.step


def _ours(
    scenario: Scenario, tables: DynamoDBSaver, clock: SimClock
) -> Callable[[], DynamoDBSaver]:
    def make() -> DynamoDBSaver:
        return DynamoDBSaver(
            tables.table_name,
            bucket_name=tables.bucket_name,
            dynamodb_client=tables.client,
            s3_client=tables.s3,
            compress_min_bytes=512 if scenario.compress else None,
            ttl_seconds=60 * 86400 if scenario.ttl else None,
            read_items=scenario.read_items,
            clock=clock,
        )

    if scenario.cold:
        return make
    warm = make()
    return lambda: warm


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=SWEEP is None,
)
@given(scenario=scenarios())
def test_any_graph_reads_back_as_on_in_memory_saver(
    tables: DynamoDBSaver, scenario: Scenario
) -> None:
    # GIVEN a random graph and the same steps on InMemorySaver and on DynamoDBSaver (cold
    # or warm, compressed or not, with or without TTL, supersteps hours apart or not)
    note(repr(scenario))
    memory = InMemorySaver()
    clock = SimClock(scenario.hours_between)
    make_ours = _ours(scenario, tables, clock)
    thread_id = f"prop-{uuid.uuid4().hex}"

    # WHEN each runs it superstep by superstep, then updates / forks old checkpoints
    graph = build(scenario)
    theirs_done = play(scenario, lambda: on(graph, memory), thread_id)
    ours_done = play(scenario, lambda: on(graph, make_ours()), thread_id, clock.tick)

    # THEN every action ended alike, and a fresh saver reads the same state, history and
    # checkpoints (values, versions, metadata, pending writes) as InMemorySaver holds
    assert ours_done == theirs_done
    reader = _ours(replace(scenario, cold=True), tables, clock)()
    ours = observe(on(graph, reader), reader, thread_id)
    theirs = observe(on(graph, memory), memory, thread_id)
    for part in ("state", "history", "checkpoints"):
        assert ours[part] == theirs[part], _difference(ours[part], theirs[part], part)


def _difference(ours: Any, theirs: Any, path: str) -> str:
    """Where two observations first differ, with short reprs (values can be megabytes)."""
    if type(ours) is type(theirs) and isinstance(ours, list | tuple):
        if len(ours) != len(theirs):
            return f"{path}: {len(ours)} elements, InMemorySaver has {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            if a != b:
                return _difference(a, b, f"{path}[{i}]")
    if type(ours) is type(theirs) and isinstance(ours, dict):
        for key in sorted(set(ours) | set(theirs), key=repr):
            if ours.get(key) != theirs.get(key):
                return _difference(ours.get(key), theirs.get(key), f"{path}[{key!r}]")
    return f"{path}: ours {_short(ours)} != InMemorySaver's {_short(theirs)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 300 else f"{text[:300]}... ({len(text)} characters)"

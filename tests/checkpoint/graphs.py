"""Small real graphs and a driver that runs them the way the step worker does.

Each graph is deterministic (explicit message ids, counter-based content) so that the same
run on DynamoDBSaver and on LangGraph's InMemorySaver can be compared value for value.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt

Saver = BaseCheckpointSaver[Any]


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    log: Annotated[list[str], operator.add]
    rounds: int
    config_blob: str


def chat_graph(checkpointer: Saver, *, rounds: int = 6) -> Any:
    """agent -> (fan_a || fan_b) -> review (asks for approval every 3rd round) -> agent ..."""

    def agent(state: ChatState) -> dict[str, Any]:
        n = state.get("rounds", 0) + 1
        return {
            "messages": [AIMessage(content=f"reply {n} " + "x" * 200, id=f"ai-{n}")],
            "log": [f"agent {n}"],
            "rounds": n,
        }

    def fan_a(state: ChatState) -> dict[str, Any]:
        return {"log": [f"a {state['rounds']}"]}

    def fan_b(state: ChatState) -> dict[str, Any]:
        return {"log": [f"b {state['rounds']}"]}

    def review(state: ChatState) -> dict[str, Any]:
        n = state["rounds"]
        if n % 3 == 0:
            decision = interrupt({"type": "approval", "round": n})
            return {
                "messages": [HumanMessage(content=f"decision {decision}", id=f"h-{n}")],
                "log": [f"review {n} {decision}"],
            }
        return {"log": [f"review {n}"]}

    def route(state: ChatState) -> str:
        return END if state["rounds"] >= rounds else "agent"

    builder = StateGraph(ChatState)
    builder.add_node("agent", agent)
    builder.add_node("fan_a", fan_a)
    builder.add_node("fan_b", fan_b)
    builder.add_node("review", review)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", "fan_a")
    builder.add_edge("agent", "fan_b")
    builder.add_edge(["fan_a", "fan_b"], "review")
    builder.add_conditional_edges("review", route, ["agent", END])
    return builder.compile(checkpointer=checkpointer)


def chat_input() -> dict[str, Any]:
    return {
        "messages": [HumanMessage(content="hello", id="h-0")],
        "log": [],
        "rounds": 0,
        "config_blob": "c" * 5000,
    }


class InnerState(TypedDict):
    items: Annotated[list[str], operator.add]


class OuterState(TypedDict):
    items: Annotated[list[str], operator.add]
    turns: int


def subgraph_graph(checkpointer: Saver, *, turns: int = 3) -> Any:
    """An outer loop calling a compiled subgraph that interrupts once per call."""

    def step_one(state: InnerState) -> dict[str, Any]:
        return {"items": [f"inner-1 of {len(state['items'])}"]}

    def ask(state: InnerState) -> dict[str, Any]:
        answer = interrupt({"type": "question", "seen": len(state["items"])})
        return {"items": [f"answer {answer}"]}

    inner = StateGraph(InnerState)
    inner.add_node("step_one", step_one)
    inner.add_node("ask", ask)
    inner.add_edge(START, "step_one")
    inner.add_edge("step_one", "ask")
    inner.add_edge("ask", END)
    child = inner.compile()

    def count(state: OuterState) -> dict[str, Any]:
        return {"turns": state.get("turns", 0) + 1, "items": ["outer"]}

    def route(state: OuterState) -> str:
        return END if state["turns"] >= turns else "count"

    outer = StateGraph(OuterState)
    outer.add_node("count", count)
    outer.add_node("child", child)
    outer.add_edge(START, "count")
    outer.add_edge("count", "child")
    outer.add_conditional_edges("child", route, ["count", END])
    return outer.compile(checkpointer=checkpointer)


def _append_all(state: list[str], writes: list[list[str]]) -> list[str]:
    return state + [item for write in writes for item in write]


class DeltaState(TypedDict):
    notes: Annotated[list[str], DeltaChannel(_append_all, snapshot_frequency=3)]
    n: int


def delta_graph(checkpointer: Saver, *, steps: int = 10) -> Any:
    def write(state: DeltaState) -> dict[str, Any]:
        n = state.get("n", 0) + 1
        return {"notes": [f"note {n} " + "y" * 300], "n": n}

    def route(state: DeltaState) -> str:
        return END if state["n"] >= steps else "write"

    builder = StateGraph(DeltaState)
    builder.add_node("write", write)
    builder.add_edge(START, "write")
    builder.add_conditional_edges("write", route, ["write", END])
    return builder.compile(checkpointer=checkpointer)


def run_stepwise(
    make_graph: Callable[[], Any],
    inputs: dict[str, Any],
    *,
    thread_id: str | None = None,
    resume: Callable[[Any], Any] = lambda value: "approve",
    max_steps: int = 200,
) -> dict[str, Any]:
    """Run like the step worker: one superstep per invocation, a freshly built graph (and,
    with a factory that makes one, a fresh saver) each time; answer interrupts with
    ``resume``. Returns the thread's config."""
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id or str(uuid.uuid4())}}
    next_input: Any = inputs
    for _ in range(max_steps):
        graph = make_graph()
        for _chunk in graph.stream(next_input, config, interrupt_after="*"):
            pass
        state = make_graph().get_state(config, subgraphs=True)
        interrupts = [i for task in state.tasks for i in task.interrupts]
        interrupts += [
            i
            for task in state.tasks
            if task.state is not None
            for t in task.state.tasks
            for i in t.interrupts  # type: ignore[union-attr]
        ]
        if interrupts:
            next_input = Command(resume=resume(interrupts[0].value))
        elif state.next:
            next_input = None
        else:
            return config
    raise AssertionError(f"graph did not finish within {max_steps} supersteps")


def history(graph: Any, config: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The thread's history without ids and timestamps (those differ between runs)."""
    return [
        (
            snapshot.values,
            snapshot.next,
            snapshot.metadata.get("step"),
            snapshot.metadata.get("source"),
            tuple(task.name for task in snapshot.tasks),
            tuple(i.value for task in snapshot.tasks for i in task.interrupts),
        )
        for snapshot in graph.get_state_history(config)
    ]

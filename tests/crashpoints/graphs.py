"""Small graphs for the crash-point scenarios (registered by ``harness.Environment``).

- ``crashpoints-fanout``: ``split`` -> ``left`` and ``right`` in one superstep (two tasks,
  each appending to a reducer channel, so a branch whose writes were lost or applied twice
  shows in the values); ``with_join=True`` adds a ``join`` step after them.
- ``crashpoints-pair``: ``first`` -> ``second``, two step messages a run: the least a run
  needs to be "mid-way" (rollback, a stuck second step), with few AWS calls per run so
  ``make test`` can replay every one of them.
- ``crashpoints-single``: one node, one step message a run (runs queued behind each other:
  the crash points that matter are in the hand-over, not in the graph).
- ``crashpoints-model``: ``ask`` -> ``answer``, one call of the platform's model each, in
  two steps: with a model limit of one call at a time the second step finds no capacity
  and is deferred (the crash points of a deferral, with few other calls).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

FANOUT_ID = "crashpoints-fanout"
FANOUT_JOIN_ID = "crashpoints-fanout-join"
PAIR_ID = "crashpoints-pair"
SINGLE_ID = "crashpoints-single"
MODEL_ID = "crashpoints-model"


class NotesState(TypedDict, total=False):
    topic: str
    notes: Annotated[list[str], operator.add]
    summary: str


def fanout_graph(checkpointer: Any, _model: Any = None, *, with_join: bool = False) -> Any:
    def split(state: NotesState) -> dict[str, Any]:
        return {"notes": [f"split {state.get('topic', '')}"]}

    def left(state: NotesState) -> dict[str, Any]:
        return {"notes": ["left"]}

    def right(state: NotesState) -> dict[str, Any]:
        return {"notes": ["right"]}

    def join(state: NotesState) -> dict[str, Any]:
        return {"summary": " + ".join(sorted(state.get("notes", [])))}

    builder = StateGraph(NotesState)
    builder.add_node("split", split)
    builder.add_node("left", left)
    builder.add_node("right", right)
    builder.add_edge(START, "split")
    builder.add_edge("split", "left")
    builder.add_edge("split", "right")
    if with_join:
        builder.add_node("join", join)
        builder.add_edge(["left", "right"], "join")
        builder.add_edge("join", END)
    else:
        builder.add_edge("left", END)
        builder.add_edge("right", END)
    return builder.compile(
        checkpointer=checkpointer, name=FANOUT_JOIN_ID if with_join else FANOUT_ID
    )


def fanout_join_graph(checkpointer: Any, model: Any = None) -> Any:
    return fanout_graph(checkpointer, model, with_join=True)


def pair_graph(checkpointer: Any, _model: Any = None) -> Any:
    def first(state: NotesState) -> dict[str, Any]:
        return {"notes": [f"first {state.get('topic', '')}"]}

    def second(state: NotesState) -> dict[str, Any]:
        return {"notes": [f"second {state.get('topic', '')}"]}

    builder = StateGraph(NotesState)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    return builder.compile(checkpointer=checkpointer, name=PAIR_ID)


def single_graph(checkpointer: Any, _model: Any = None) -> Any:
    def only(state: NotesState) -> dict[str, Any]:
        return {"notes": [f"only {state.get('topic', '')}"]}

    builder = StateGraph(NotesState)
    builder.add_node("only", only)
    builder.add_edge(START, "only")
    builder.add_edge("only", END)
    return builder.compile(checkpointer=checkpointer, name=SINGLE_ID)


def model_graph(checkpointer: Any, model: Any = None) -> Any:
    from langchain_core.messages import HumanMessage

    from graphs.offline_model import OfflineChatModel

    llm = model if model is not None else OfflineChatModel()

    def ask(state: NotesState) -> dict[str, Any]:
        reply = llm.invoke([HumanMessage(f"ask {state.get('topic', '')}")])
        return {"notes": [f"ask: {reply.content}"]}

    def answer(state: NotesState) -> dict[str, Any]:
        reply = llm.invoke([HumanMessage(f"answer {state.get('topic', '')}")])
        return {"notes": [f"answer: {reply.content}"]}

    builder = StateGraph(NotesState)
    builder.add_node("ask", ask)
    builder.add_node("answer", answer)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=checkpointer, name=MODEL_ID)


TEST_GRAPHS = {
    FANOUT_ID: fanout_graph,
    FANOUT_JOIN_ID: fanout_join_graph,
    PAIR_ID: pair_graph,
    SINGLE_ID: single_graph,
    MODEL_ID: model_graph,
}

"""A small fan-out graph for the crash-point scenarios: parallel branches in one superstep.

``split`` -> (``left`` and ``right`` together, one superstep with two tasks) -> ``join``.
Each branch appends to a reducer channel, so a branch whose writes were lost or applied twice
shows in the values.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

FANOUT_ID = "crashpoints-fanout"


class FanoutState(TypedDict, total=False):
    topic: str
    notes: Annotated[list[str], operator.add]
    summary: str


def fanout_graph(checkpointer: Any, _model: Any = None) -> Any:
    def split(state: FanoutState) -> dict[str, Any]:
        return {"notes": [f"split {state.get('topic', '')}"]}

    def left(state: FanoutState) -> dict[str, Any]:
        return {"notes": ["left"]}

    def right(state: FanoutState) -> dict[str, Any]:
        return {"notes": ["right"]}

    def join(state: FanoutState) -> dict[str, Any]:
        return {"summary": " + ".join(sorted(state.get("notes", [])))}

    builder = StateGraph(FanoutState)
    builder.add_node("split", split)
    builder.add_node("left", left)
    builder.add_node("right", right)
    builder.add_node("join", join)
    builder.add_edge(START, "split")
    builder.add_edge("split", "left")
    builder.add_edge("split", "right")
    builder.add_edge(["left", "right"], "join")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=checkpointer, name=FANOUT_ID)

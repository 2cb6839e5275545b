"""A small LangGraph project, written as for `langgraph dev`: nothing here knows lambdagraph.

echo -> review (asks a human with ``interrupt``) -> END; ``count`` counts the nodes that ran.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from helpers import echo_of
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import interrupt


class State(MessagesState):
    count: Annotated[int, operator.add]
    approved: bool


def echo(state: State) -> dict[str, Any]:
    last = state["messages"][-1]
    return {"messages": [{"role": "ai", "content": echo_of(str(last.content))}], "count": 1}


def review(state: State) -> dict[str, Any]:
    answer = interrupt({"question": "Send this echo?", "echo": state["messages"][-1].content})
    return {"approved": bool(answer.get("approved")), "count": 1}


builder = StateGraph(State)
builder.add_node("echo", echo)
builder.add_node("review", review)
builder.add_edge(START, "echo")
builder.add_edge("echo", "review")
builder.add_edge("review", END)

# No checkpointer: the server attaches its own.
graph = builder.compile()

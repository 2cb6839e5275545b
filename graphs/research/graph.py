"""plan -> research (a subgraph: search -> summarize) -> review -> answer.

A small graph that shows what streams carry beyond state: ``plan`` and ``search`` write
progress with ``get_stream_writer()`` (``custom`` events), ``summarize`` calls the model
(tokens in ``messages``), ``research`` is a subgraph (``mode|research:<task>`` events with
``stream_subgraphs``), and ``review`` asks a human through ``interrupt()`` when the input
sets ``review``. ``pause_s`` (at most 5 s) makes ``search`` as slow as a real tool call.
"""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import SystemMessage
from langgraph.config import get_stream_writer
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, interrupt

from graphs.offline_model import OfflineChatModel

MAX_PAUSE_S = 5.0
SUMMARIZE = "[general] You summarise what the research found, in one sentence."


class ResearchState(MessagesState):
    notes: Annotated[list[str], operator.add]
    review: bool
    pause_s: float
    approved: bool


def build_graph(
    checkpointer: Checkpointer = None, model: BaseChatModel | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    llm: BaseChatModel = model if model is not None else OfflineChatModel()

    def plan(state: ResearchState) -> dict[str, Any]:
        get_stream_writer()({"stage": "plan", "status": "planning"})
        return {"notes": ["plan: look it up"]}

    def search(state: ResearchState) -> dict[str, Any]:
        writer = get_stream_writer()
        writer({"stage": "search", "status": "started"})
        time.sleep(min(max(float(state.get("pause_s") or 0), 0.0), MAX_PAUSE_S))
        writer({"stage": "search", "status": "done", "hits": 3})
        return {"notes": ["search: 3 hits"]}

    def summarize(state: ResearchState) -> dict[str, Any]:
        answer = llm.invoke([SystemMessage(SUMMARIZE), *state["messages"]])
        return {"messages": [answer], "notes": ["summarize: done"]}

    research = StateGraph(ResearchState)
    research.add_node("search", search)
    research.add_node("summarize", summarize)
    research.add_edge(START, "search")
    research.add_edge("search", "summarize")

    def review(state: ResearchState) -> dict[str, Any]:
        if not state.get("review"):
            return {"approved": True}
        decision = interrupt({"question": "Publish this summary?", "notes": state["notes"]})
        return {"approved": bool(decision)}

    def answer(state: ResearchState) -> dict[str, Any]:
        return {"notes": ["answer: published" if state.get("approved") else "answer: held"]}

    builder = StateGraph(ResearchState)
    builder.add_node("plan", plan)
    builder.add_node("research", research.compile())
    builder.add_node("review", review)
    builder.add_node("answer", answer)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "research")
    builder.add_edge("research", "review")
    builder.add_edge("review", "answer")
    return builder.compile(checkpointer=checkpointer, name="research")

"""plan -> agent <-> research (one tool call, a subgraph) -> check -> review -> answer.

A ReAct agent: ``agent`` calls the model with the tools bound (``search_docs`` over the
documents in ``docs/``, ``calculator``); each tool call it makes is a ``research`` task of its
own (``Send`` to a one-node subgraph), ``count_round`` counts the round, and the observations
go back to ``agent``, until it answers without calling a tool. ``check`` then reviews the
draft (it must cite only documents the searches returned, at least one when there were any,
and state every calculation's value) and sends it back with a note, at most
``max_revisions`` times. After ``max_tool_rounds`` rounds of tool calls a further request
for tools is not run: ``capped`` answers with what is known. The loop lives in the parent
graph because lambdagraph runs one superstep of it per Lambda invocation (a subgraph's own
supersteps all run within one of its parent's): so every model call and every round of tool
calls is its own step message and checkpoint.

A tool that fails, hangs past ``tool_timeout_s`` or returns malformed data, and a call the
model gets wrong (unknown tool, invalid arguments), is an observation with
``status="error"`` (graphs/research/tools.py), and the run goes on.

What the graph shows of streams: ``plan`` and each tool call write progress with
``get_stream_writer()`` (``custom`` events), ``agent`` streams model tokens (``messages``),
``research`` is a subgraph (``mode|research:<task>`` events with ``stream_subgraphs``), and
``review`` asks a human through ``interrupt()`` when the input sets ``review``. ``pause_s``
(at most 5 s) makes each tool call as slow as a real one.

Options (``configurable``): ``max_tool_rounds`` (3), ``max_revisions`` (2),
``tool_timeout_s`` (10).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph, add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, Send, interrupt
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import TypedDict

from graphs.offline_model import CALCULATOR_TOOL, REVIEWER_NAME, SEARCH_TOOL, OfflineChatModel
from graphs.research import prompts
from graphs.research.tools import INVALID_ARGS, ResearchTool, default_tools, run_tool

MAX_PAUSE_S = 5.0
_CITATION = re.compile(r"\[([a-z0-9][a-z0-9_.-]*)\]")


class ResearchOptions(BaseModel):
    """The graph's options, read from ``configurable`` (other keys there are ignored)."""

    model_config = ConfigDict(extra="ignore")

    max_tool_rounds: int = Field(default=3, ge=1, le=10)
    max_revisions: int = Field(default=2, ge=0, le=5)
    tool_timeout_s: float = Field(default=10.0, gt=0, le=60)

    @classmethod
    def of(cls, config: RunnableConfig | None) -> ResearchOptions:
        configurable = (config or {}).get("configurable") or {}
        try:
            return cls.model_validate(
                {k: configurable[k] for k in cls.model_fields if k in configurable}
            )
        except ValidationError as exc:
            raise ValueError(f"research graph options in configurable: {exc}") from exc


class ResearchState(MessagesState):
    notes: Annotated[list[str], operator.add]
    review: bool
    pause_s: float
    approved: bool
    # This question's rounds of tool calls, and the times the reviewer sent the draft back.
    tool_rounds: int
    revisions: int


class ToolTask(TypedDict):
    """What one ``research`` task gets (``Send``): the call, and the run's pause."""

    call: ToolCall
    pause_s: float


class ToolOutput(TypedDict):
    """What a ``research`` task hands back: its observation and its note."""

    messages: Annotated[list[AnyMessage], add_messages]
    notes: Annotated[list[str], operator.add]


class ToolRunState(ToolTask, ToolOutput):
    """The ``research`` subgraph's state: one tool call and what came of it."""


def build_graph(
    checkpointer: Checkpointer = None,
    model: BaseChatModel | None = None,
    tools: Mapping[str, ResearchTool] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the research graph; with no model, the deterministic offline model is used.

    ``tools`` replaces the shipped tools (tests pass failing or hanging ones).
    """
    llm: BaseChatModel = model if model is not None else OfflineChatModel()
    toolset: Mapping[str, ResearchTool] = tools if tools is not None else default_tools()
    bound = llm.bind_tools([t.tool for t in toolset.values()])

    def plan(state: ResearchState) -> dict[str, Any]:
        get_stream_writer()({"stage": "plan", "status": "planning"})
        # A new question starts its own budget of tool rounds and revisions.
        return {"notes": ["plan: search the docs"], "tool_rounds": 0, "revisions": 0}

    def agent(state: ResearchState) -> dict[str, Any]:
        answer = bound.invoke([SystemMessage(prompts.AGENT), *state["messages"]])
        return {"messages": [answer]}

    def after_agent(state: ResearchState, config: RunnableConfig) -> Any:
        calls = _calls(state["messages"][-1])
        if not calls:
            return "check"
        if state.get("tool_rounds", 0) >= ResearchOptions.of(config).max_tool_rounds:
            return "capped"
        pause = min(max(float(state.get("pause_s") or 0), 0.0), MAX_PAUSE_S)
        return [Send("research", ToolTask(call=call, pause_s=pause)) for call in calls]

    def tool(task: ToolRunState, config: RunnableConfig) -> dict[str, Any]:
        call = task["call"]
        writer = get_stream_writer()
        stage = call.get("name") or "tool"
        # The demo's stage names: "search" for the search tool (as before tools existed).
        stage = "search" if stage == SEARCH_TOOL else stage
        writer({"stage": stage, "status": "started"})
        timeout = ResearchOptions.of(config).tool_timeout_s
        observation = run_tool(call, toolset, timeout_s=timeout, pause_s=task["pause_s"])
        done: dict[str, Any] = {"stage": stage, "status": observation.status}
        note = f"{stage}: {observation.status}"
        if observation.status == "success" and stage == "search":
            hits = len(_hits(observation))
            done = {"stage": stage, "status": "done", "hits": hits}
            note = f"search: {hits} hits"
        writer(done)
        return {"messages": [observation], "notes": [note]}

    # One tool call, as a subgraph: its progress events carry the ``research:<task>``
    # namespace, and parallel calls of one round are tasks of the same superstep.
    research = StateGraph(ToolRunState, input_schema=ToolTask, output_schema=ToolOutput)
    research.add_node("tool", tool)  # type: ignore[call-overload]  # mypy: TypedDict mixin
    research.add_edge(START, "tool")
    research.add_edge("tool", END)

    def count_round(state: ResearchState) -> dict[str, Any]:
        # After the tool tasks of one round: one superstep that counts the round.
        return {"tool_rounds": state.get("tool_rounds", 0) + 1}

    def capped(state: ResearchState, config: RunnableConfig) -> dict[str, Any]:
        limit = ResearchOptions.of(config).max_tool_rounds
        refused = [
            ToolMessage(
                content=f"Error: not run: the limit of {limit} rounds of tool calls was reached",
                name=call.get("name") or "unknown",
                tool_call_id=call.get("id") or "",
                status="error",
            )
            for call in _calls(state["messages"][-1])
        ]
        text = (
            f"I could not finish the research within {limit} rounds of tool calls. "
            + _summary(state["messages"])
        ).strip()
        return {
            "messages": [*refused, AIMessage(content=text)],
            "notes": [f"agent: stopped after {limit} tool rounds"],
        }

    def check(state: ResearchState, config: RunnableConfig) -> dict[str, Any]:
        problems = review_draft(state["messages"])
        if not problems:
            return {"notes": ["check: draft accepted"]}
        if state.get("revisions", 0) >= ResearchOptions.of(config).max_revisions:
            return {"notes": [f"check: accepted with problems: {'; '.join(problems)}"]}
        return {
            "messages": [HumanMessage(content=prompts.reviewer_note(problems), name=REVIEWER_NAME)],
            "revisions": state.get("revisions", 0) + 1,
            "notes": ["check: sent back"],
        }

    def after_check(state: ResearchState) -> Literal["agent", "review"]:
        last = state["messages"][-1]
        if isinstance(last, HumanMessage) and last.name == REVIEWER_NAME:
            return "agent"
        return "review"

    def review(state: ResearchState) -> dict[str, Any]:
        if not state.get("review"):
            return {"approved": True}
        decision = interrupt(
            {
                "question": "Publish this answer?",
                "answer": _last_answer(state["messages"]),
                "notes": state["notes"],
            }
        )
        return {"approved": bool(decision)}

    def answer(state: ResearchState) -> dict[str, Any]:
        return {"notes": ["answer: published" if state.get("approved") else "answer: held"]}

    builder = StateGraph(ResearchState)
    builder.add_node("plan", plan)
    builder.add_node("agent", agent)
    builder.add_node("research", research.compile())
    builder.add_node("count_round", count_round)
    builder.add_node("capped", capped)
    builder.add_node("check", check)
    builder.add_node("review", review)
    builder.add_node("answer", answer)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "agent")
    builder.add_conditional_edges("agent", after_agent, ["research", "capped", "check"])
    builder.add_edge("research", "count_round")
    builder.add_edge("count_round", "agent")
    builder.add_edge("capped", "review")
    builder.add_conditional_edges("check", after_check, ["agent", "review"])
    builder.add_edge("review", "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=checkpointer, name="research")


def _calls(message: BaseMessage) -> list[ToolCall]:
    """The tool calls of a model's message, those it got wrong included: a call whose
    arguments were not valid JSON is run as a call to fail (an error observation), so the
    model learns of it and every call it made gets its answer."""
    if not isinstance(message, AIMessage):
        return []
    calls = list(message.tool_calls)
    for n, bad in enumerate(message.invalid_tool_calls):
        calls.append(
            ToolCall(
                name=bad.get("name") or "unknown",
                args={INVALID_ARGS: str(bad.get("args") or "")[:200]},
                id=bad.get("id") or f"invalid-{n}",
                type="tool_call",
            )
        )
    return calls


def _hits(observation: ToolMessage) -> list[str]:
    try:
        data = json.loads(str(observation.content))
    except ValueError:
        return []
    hits = data.get("hits") if isinstance(data, dict) else None
    return [str(h.get("id")) for h in hits or [] if isinstance(h, dict)]


def _turn(messages: Sequence[BaseMessage]) -> Sequence[BaseMessage]:
    """The messages since the question being researched (reviewer notes are not questions)."""
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, HumanMessage) and message.name != REVIEWER_NAME:
            return messages[i + 1 :]
    return messages


def _last_answer(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, AIMessage) and not message.tool_calls:
            return str(message.content)
    return ""


def _summary(messages: Sequence[BaseMessage]) -> str:
    found = sorted({h for m in _turn(messages) if isinstance(m, ToolMessage) for h in _hits(m)})
    return f"Documents found so far: {', '.join(f'[{h}]' for h in found)}." if found else ""


def review_draft(messages: Sequence[BaseMessage]) -> list[str]:
    """What is wrong with the draft (the last message) given this turn's observations.

    Grounding rules, no model call: the draft cites at least one document the searches
    returned (when they returned any), cites none they did not return, and states the value
    of every calculation the calculator made.
    """
    turn = _turn(messages)
    draft = str(turn[-1].content) if turn else ""
    found: set[str] = set()
    values: list[str] = []
    for message in turn:
        if not isinstance(message, ToolMessage) or message.status == "error":
            continue
        found.update(_hits(message))
        if message.name == CALCULATOR_TOOL:
            try:
                values.append(str(json.loads(str(message.content))["value"]))
            except (ValueError, KeyError, TypeError):
                continue
    cited = set(_CITATION.findall(draft))
    problems = []
    unknown = sorted(cited - found)
    if unknown:
        problems.append(
            f"it cites {', '.join(f'[{c}]' for c in unknown)}, which no search returned"
        )
    if found and not cited & found:
        problems.append(
            "cite the documents you used as [doc-id] (found: "
            + ", ".join(f"[{f}]" for f in sorted(found))
            + ")"
        )
    missing = [v for v in values if v not in draft]
    if missing:
        problems.append(f"state the calculator's result ({', '.join(missing)})")
    return problems

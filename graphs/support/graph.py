"""classify -> billing | technical | general | escalate -> finalize.

Each node is one superstep, so a run takes three steps (four messages counting the input):
classify, the specialist, finalize. ``escalate`` asks a human through ``interrupt()``
before an account is cancelled; the run resumes with the reviewer's decision.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, interrupt

from graphs.offline_model import OfflineChatModel
from graphs.support import prompts
from graphs.support.state import SupportState

Route = Literal["billing", "technical", "general", "escalate"]
ROUTES: tuple[str, ...] = ("billing", "technical", "general")


def build_graph(
    checkpointer: Checkpointer = None, model: BaseChatModel | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the support graph; with no model, the deterministic offline model is used."""
    llm: BaseChatModel = model if model is not None else OfflineChatModel()

    def classify(state: SupportState) -> dict[str, Any]:
        answer = llm.invoke([SystemMessage(prompts.CLASSIFY), *state["messages"]])
        label = str(answer.content).strip().lower()
        route = label if label in ROUTES else "escalate" if label == "cancel" else "general"
        return {"route": route}

    def route_after_classify(state: SupportState) -> Route:
        route = state["route"]
        return route if route in ROUTES else "escalate"  # type: ignore[return-value]

    def specialist(name: str) -> Any:
        def reply(state: SupportState) -> dict[str, Any]:
            answer = llm.invoke([SystemMessage(prompts.SPECIALISTS[name]), *state["messages"]])
            return {"messages": [answer]}

        return reply

    def escalate(state: SupportState) -> dict[str, Any]:
        # An approval request in the shape the approvals flow understands ("type": "approval").
        decision = interrupt(
            {
                "type": "approval",
                "action": "cancel_account",
                "question": "The customer asks to cancel their account. Approve?",
            }
        )
        approved = _approved(decision)
        text = (
            "A colleague approved it: your account will be cancelled."
            if approved
            else "A colleague reviewed your request; we will keep your account open and call you."
        )
        return {"messages": [AIMessage(content=text)]}

    def finalize(state: SupportState) -> dict[str, Any]:
        # A separate superstep that only labels the outcome; keeps runs multi-step.
        return {"route": f"{state['route']}:done"}

    builder = StateGraph(SupportState)
    builder.add_node("classify", classify)
    for name in ROUTES:
        builder.add_node(name, specialist(name))
        builder.add_edge(name, "finalize")
    builder.add_node("escalate", escalate)
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "classify")
    builder.add_conditional_edges("classify", route_after_classify, [*ROUTES, "escalate"])
    builder.add_edge("escalate", "finalize")
    builder.add_edge("finalize", END)
    return builder.compile(checkpointer=checkpointer, name="support")


def _approved(decision: Any) -> bool:
    """Accept the approvals resume value (dict) or a plain yes/no from a developer."""
    if isinstance(decision, dict):
        return bool(decision.get("approved", decision.get("decision") == "approve"))
    if isinstance(decision, str):
        return decision.strip().lower() in {"yes", "y", "approve", "approved", "true"}
    return bool(decision)

"""classify -> billing | technical | general | escalate | refund -> finalize.

Each node is one superstep, so a run takes three steps (four messages counting the input):
classify, the specialist, finalize. ``escalate`` asks a human through ``interrupt()``
before an account is cancelled, ``refund`` before money is refunded (a billing message asking
for a refund of an amount, "please refund $49"); the run resumes with the reviewer's decision
(README, "Human approval").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, interrupt

from graphs.offline_model import OfflineChatModel
from graphs.support import prompts
from graphs.support.state import SupportState

Route = Literal["billing", "technical", "general", "escalate", "refund"]
ROUTES: tuple[str, ...] = ("billing", "technical", "general")
# "refund $49", "refund of $12.50": the amount a refund request names.
_REFUND_AMOUNT = re.compile(r"refund\D{0,20}?\$\s?(\d+(?:\.\d{1,2})?)", re.IGNORECASE)


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
        if route == "billing" and refund_amount(state["messages"]) is not None:
            return "refund"
        return route if route in ROUTES else "escalate"  # type: ignore[return-value]

    def refund(state: SupportState) -> dict[str, Any]:
        amount = refund_amount(state["messages"]) or "0"
        decision = interrupt(
            {
                "type": "approval",
                "summary": f"Refund ${amount} to the customer",
                "action": {"type": "refund", "amount_usd": amount},
                "why": _last_human(state["messages"]),
            }
        )
        text = (
            f"Your refund of ${amount} has been issued."
            if _approved(decision)
            else "A colleague will look at your refund request and follow up with you shortly."
        )
        return {"messages": [AIMessage(content=text)], "route": "refund"}

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
    builder.add_node("refund", refund)
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "classify")
    builder.add_conditional_edges("classify", route_after_classify, [*ROUTES, "escalate", "refund"])
    builder.add_edge("escalate", "finalize")
    builder.add_edge("refund", "finalize")
    builder.add_edge("finalize", END)
    return builder.compile(checkpointer=checkpointer, name="support")


def _last_human(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if message.type == "human":
            return str(message.content)
    return ""


def refund_amount(messages: Sequence[BaseMessage]) -> str | None:
    """The amount the last customer message asks to refund ("49", "12.50"), if any."""
    match = _REFUND_AMOUNT.search(_last_human(messages))
    return match.group(1) if match else None


def _approved(decision: Any) -> bool:
    """Accept the approvals resume value (dict) or a plain yes/no from a developer."""
    if isinstance(decision, dict):
        return bool(decision.get("approved", decision.get("decision") == "approve"))
    if isinstance(decision, str):
        return decision.strip().lower() in {"yes", "y", "approve", "approved", "true"}
    return bool(decision)

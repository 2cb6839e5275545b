"""classify -> billing | technical | general | escalate | refund | triage -> finalize.

Each node is one superstep, so a run takes three steps (four messages counting the input):
classify, the specialist, finalize. ``classify`` asks the model for a structured
:class:`~graphs.support.state.Classification` (route, confidence 0..1, reason) through
``with_structured_output``. A confidence below the threshold (``configurable``
``confidence_threshold``, default 0.5), or an answer that cannot be read, goes to ``triage``,
which asks a human through ``interrupt()`` whether the proposed route is right; the reviewer
approves it, names another route in the comment, or rejects it and a colleague takes the
conversation over. ``escalate`` asks a human before an account is cancelled, ``refund``
before money is refunded (a billing message asking for a refund of an amount, "please
refund $49"); the run resumes with the reviewer's decision (README, "Human approval").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, Command, interrupt

from graphs.offline_model import OfflineChatModel
from graphs.support import prompts
from graphs.support.state import Classification, SupportState

Route = Literal["billing", "technical", "general", "escalate", "refund", "triage"]
ROUTES: tuple[str, ...] = ("billing", "technical", "general")
DEFAULT_CONFIDENCE_THRESHOLD = 0.5
HANDOFF_REPLY = "A colleague will read your message and get back to you shortly."
# "refund $49", "refund of $12.50": the amount a refund request names.
_REFUND_AMOUNT = re.compile(r"refund\D{0,20}?\$\s?(\d+(?:\.\d{1,2})?)", re.IGNORECASE)


def build_graph(
    checkpointer: Checkpointer = None, model: BaseChatModel | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the support graph; with no model, the deterministic offline model is used."""
    llm: BaseChatModel = model if model is not None else OfflineChatModel()
    # include_raw: an answer that does not fit the schema is a low-confidence route for a
    # human to check, not a failed run.
    classifier = llm.with_structured_output(Classification, include_raw=True)

    def classify(state: SupportState) -> dict[str, Any]:
        answer = classifier.invoke([SystemMessage(prompts.CLASSIFY), *state["messages"]])
        parsed = answer.get("parsed") if isinstance(answer, dict) else None
        if not isinstance(parsed, Classification):
            error = answer.get("parsing_error") if isinstance(answer, dict) else None
            return {
                "route": "general",
                "confidence": 0.0,
                "reason": f"the classifier's answer could not be read ({error})"[:300],
            }
        route = "escalate" if parsed.route == "cancel" else parsed.route
        return {"route": route, "confidence": parsed.confidence, "reason": parsed.reason}

    def route_after_classify(state: SupportState, config: RunnableConfig) -> Route:
        if state.get("confidence", 1.0) < confidence_threshold(config):
            return "triage"
        return _route(state)

    def triage(state: SupportState) -> Command[str]:
        proposed = state["route"]
        confidence = float(state.get("confidence", 0.0))
        decision = interrupt(
            {
                "type": "approval",
                "summary": f"Route this message to {proposed} "
                f"(the classifier is {confidence:.0%} sure)?",
                "action": {"type": "route", "route": proposed, "confidence": confidence},
                "why": state.get("reason") or "low classifier confidence",
                "message": _last_human(state["messages"]),
                "note": "Approve the route, or reject it and name billing, technical or "
                "general in the comment; a rejection without one hands the conversation "
                "to a colleague.",
            }
        )
        if _approved(decision):
            return Command(goto=_route(state), update={"confidence": 1.0})
        chosen = _named_route(decision)
        if chosen is not None:
            return Command(goto=chosen, update={"route": chosen, "confidence": 1.0})
        return Command(
            goto="finalize",
            update={"route": "human", "messages": [AIMessage(content=HANDOFF_REPLY)]},
        )

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
    builder.add_node("triage", triage, destinations=(*ROUTES, "escalate", "refund", "finalize"))
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "classify")
    builder.add_conditional_edges(
        "classify", route_after_classify, [*ROUTES, "escalate", "refund", "triage"]
    )
    builder.add_edge("escalate", "finalize")
    builder.add_edge("refund", "finalize")
    builder.add_edge("finalize", END)
    return builder.compile(checkpointer=checkpointer, name="support")


def confidence_threshold(config: RunnableConfig | None) -> float:
    """``configurable.confidence_threshold`` (0..1), else the default; ValueError otherwise."""
    raw = ((config or {}).get("configurable") or {}).get("confidence_threshold")
    if raw is None:
        return DEFAULT_CONFIDENCE_THRESHOLD
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"configurable.confidence_threshold must be a number from 0 to 1, not {raw!r}"
        ) from exc
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"configurable.confidence_threshold must be from 0 to 1, not {raw!r}")
    return value


def _route(state: SupportState) -> Route:
    route = state["route"]
    if route == "billing" and refund_amount(state["messages"]) is not None:
        return "refund"
    return route if route in ROUTES else "escalate"  # type: ignore[return-value]


def _named_route(decision: Any) -> str | None:
    """The route a reviewer named in the comment of a rejection, if exactly one."""
    comment = decision.get("comment") if isinstance(decision, dict) else None
    if not isinstance(comment, str):
        return None
    named = [r for r in ROUTES if re.search(rf"\b{r}\b", comment, re.IGNORECASE)]
    return named[0] if len(named) == 1 else None


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

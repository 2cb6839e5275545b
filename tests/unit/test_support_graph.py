"""The support graph and the deterministic offline model."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from graphs.offline_model import OfflineChatModel, classify_text
from graphs.registry import get_factory, graph_ids
from graphs.support import prompts


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("Why is there a second charge on my card?", "billing"),
        ("Please send the INVOICE again", "billing"),
        ("I want a refund", "billing"),
        ("The app crashes on start", "technical"),
        ("connection timeout when syncing", "technical"),
        ("Please cancel my account", "cancel"),
        ("What are your opening hours?", "general"),
    ],
)
def test_keyword_routing(text: str, route: str) -> None:
    assert classify_text(text) == route


def test_offline_model_is_deterministic() -> None:
    # GIVEN the same conversation twice
    model = OfflineChatModel()
    conversation = [SystemMessage(prompts.SPECIALISTS["billing"]), HumanMessage("refund please")]

    # WHEN the model answers both
    first, second = model.invoke(conversation), model.invoke(conversation)

    # THEN the replies are identical and carry token usage
    assert first.content == second.content
    assert first.content.startswith("Billing here")
    assert first.usage_metadata is not None
    assert first.usage_metadata["total_tokens"] > 0


def test_registry_lists_support() -> None:
    assert "support" in graph_ids()


def _graph() -> object:
    return get_factory("support")(InMemorySaver(), None)


@pytest.mark.parametrize(
    ("text", "route", "reply"),
    [
        ("my invoice is wrong", "billing:done", "Billing here"),
        ("I get an error", "technical:done", "Technical support here"),
        ("hi", "general:done", "Thanks for reaching out"),
    ],
)
def test_support_answers_through_the_right_specialist(text: str, route: str, reply: str) -> None:
    # WHEN the graph runs to the end
    result = _graph().invoke(  # type: ignore[attr-defined]
        {"messages": [{"role": "user", "content": text}]}, {"configurable": {"thread_id": "t"}}
    )
    # THEN the specialist replied and finalize ran
    assert result["route"] == route
    assert result["messages"][-1].content.startswith(reply)


def test_cancellation_asks_a_human_and_resumes_with_the_decision() -> None:
    graph = _graph()
    config = {"configurable": {"thread_id": "t"}}
    # WHEN an account cancellation comes in
    first = graph.invoke({"messages": [{"role": "user", "content": "cancel my account"}]}, config)  # type: ignore[attr-defined]
    # THEN the graph waits on an approval interrupt
    assert first["__interrupt__"][0].value["type"] == "approval"
    # WHEN the reviewer rejects
    done = graph.invoke(Command(resume={"decision": "reject", "approved": False}), config)  # type: ignore[attr-defined]
    # THEN the customer is told the account stays open
    assert "keep your account open" in done["messages"][-1].content


@pytest.mark.parametrize(
    ("decision", "reply"),
    [
        ({"decision": "approve", "approved": True}, "Your refund of $49 has been issued."),
        ({"decision": "reject", "approved": False}, "follow up"),
        ({"decision": "expired", "approved": False}, "follow up"),
    ],
)
def test_a_refund_asks_for_approval_first(decision: dict[str, object], reply: str) -> None:
    graph = _graph()
    config = {"configurable": {"thread_id": "t"}}
    # WHEN a refund of an amount is requested
    text = "I was charged twice, please refund $49"
    first = graph.invoke({"messages": [{"role": "user", "content": text}]}, config)  # type: ignore[attr-defined]
    # THEN the graph waits on an approval naming the amount, before any reply
    (asked,) = first["__interrupt__"]
    assert asked.value["type"] == "approval"
    assert asked.value["action"] == {"type": "refund", "amount_usd": "49"}
    assert all(m.type == "human" for m in first["messages"])
    # WHEN it resumes with the decision
    done = graph.invoke(Command(resume={asked.id: decision}), config)  # type: ignore[attr-defined]
    # THEN the refund is confirmed only when approved
    assert reply in done["messages"][-1].content
    assert done["route"] == "refund:done"


def test_a_refund_without_an_amount_stays_with_billing() -> None:
    result = _graph().invoke(  # type: ignore[attr-defined]
        {"messages": [{"role": "user", "content": "I want a refund"}]},
        {"configurable": {"thread_id": "t"}},
    )
    assert "__interrupt__" not in result
    assert result["route"] == "billing:done"

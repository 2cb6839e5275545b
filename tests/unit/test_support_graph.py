"""The support graph and the deterministic offline model."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from graphs.offline_model import OfflineChatModel, classify_text, classify_with_confidence
from graphs.registry import get_factory, graph_ids
from graphs.support import build_graph as build_support
from graphs.support import prompts
from graphs.support.graph import DEFAULT_CONFIDENCE_THRESHOLD, HANDOFF_REPLY
from graphs.support.state import Classification
from tests.fake_models import ScriptedModel, tool_call


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


# --- structured classification and low confidence ----------------------------------------


@pytest.mark.parametrize(
    ("text", "route", "confident"),
    [
        ("I was charged twice on my invoice", "billing", True),
        ("The app crashes with an error", "technical", True),
        ("hi", "general", True),
        ("What are your opening hours?", "general", True),
        ("Do you sell gift cards?", "general", False),
        ("My refund page shows an error", "billing", False),
    ],
    ids=["billing", "technical", "greeting", "question", "no-keyword", "two-routes"],
)
def test_confidence_comes_from_the_keyword_hits(text: str, route: str, confident: bool) -> None:
    got_route, confidence, reason = classify_with_confidence(text)
    assert got_route == route
    assert 0.0 <= confidence <= 1.0
    assert (confidence >= DEFAULT_CONFIDENCE_THRESHOLD) is confident
    assert reason


def test_the_offline_model_gives_structured_output_through_tool_calling() -> None:
    # WHEN the classifier prompt is answered with the schema bound, as with_structured_output binds it
    structured = OfflineChatModel().with_structured_output(Classification, include_raw=True)
    answer = structured.invoke(
        [SystemMessage(prompts.CLASSIFY), HumanMessage("I was charged twice on my invoice")]
    )

    # THEN the raw reply is a tool call of the schema, parsed into the pydantic model
    assert isinstance(answer, dict)
    (call,) = answer["raw"].tool_calls
    assert call["name"] == "Classification"
    assert answer["parsing_error"] is None
    assert answer["parsed"] == Classification(
        route="billing", confidence=0.8, reason="billing keywords: charge, invoice"
    )


def test_the_classification_is_kept_in_the_state() -> None:
    result = _graph().invoke(  # type: ignore[attr-defined]
        {"messages": [{"role": "user", "content": "my invoice is wrong"}]},
        {"configurable": {"thread_id": "t"}},
    )
    assert result["route"] == "billing:done"
    assert result["confidence"] == 0.7
    assert result["reason"] == "billing keywords: invoice"


UNSURE = "Do you sell gift cards?"


def _unsure(graph: object, config: dict[str, object]) -> object:
    first = graph.invoke({"messages": [{"role": "user", "content": UNSURE}]}, config)  # type: ignore[attr-defined]
    (asked,) = first["__interrupt__"]
    return asked


def test_low_confidence_asks_a_human_before_any_reply() -> None:
    graph = _graph()
    config = {"configurable": {"thread_id": "t"}}

    # WHEN a message matches no route
    asked = _unsure(graph, config)

    # THEN an approval (the platform's shape) proposes the route with its confidence
    value = asked.value  # type: ignore[attr-defined]
    assert value["type"] == "approval"
    assert value["summary"] == "Route this message to general (the classifier is 30% sure)?"
    assert value["action"] == {"type": "route", "route": "general", "confidence": 0.3}
    assert value["why"] == "no route keyword matched"
    assert value["message"] == UNSURE
    state = graph.get_state(config)  # type: ignore[attr-defined]
    assert state.next == ("triage",)
    assert all(m.type == "human" for m in state.values["messages"])


@pytest.mark.parametrize(
    ("decision", "route", "reply"),
    [
        ({"decision": "approve", "approved": True}, "general:done", "Thanks for reaching out"),
        (
            {"decision": "reject", "approved": False, "comment": "this is billing"},
            "billing:done",
            "Billing here",
        ),
        ({"decision": "reject", "approved": False, "comment": None}, "human:done", HANDOFF_REPLY),
        ({"decision": "expired", "approved": False}, "human:done", HANDOFF_REPLY),
    ],
    ids=["approved", "rerouted", "rejected", "expired"],
)
def test_the_reviewers_decision_routes_the_message(
    decision: dict[str, object], route: str, reply: str
) -> None:
    graph = _graph()
    config = {"configurable": {"thread_id": "t"}}
    _unsure(graph, config)

    done = graph.invoke(Command(resume=decision), config)  # type: ignore[attr-defined]

    assert done["route"] == route
    assert done["messages"][-1].content.startswith(reply)


@pytest.mark.parametrize(
    ("threshold", "text", "asks"),
    [
        (0.9, "my invoice is wrong", True),
        (0.0, UNSURE, False),
        ("0.75", "my invoice is wrong", True),
    ],
)
def test_the_threshold_is_configurable(threshold: object, text: str, asks: bool) -> None:
    config = {"configurable": {"thread_id": "t", "confidence_threshold": threshold}}
    result = _graph().invoke({"messages": [{"role": "user", "content": text}]}, config)  # type: ignore[attr-defined]
    assert ("__interrupt__" in result) is asks


@pytest.mark.parametrize("threshold", [1.5, -0.1, "high"])
def test_an_invalid_threshold_fails_saying_so(threshold: object) -> None:
    config = {"configurable": {"thread_id": "t", "confidence_threshold": threshold}}
    with pytest.raises(ValueError, match="confidence_threshold must be"):
        _graph().invoke({"messages": [{"role": "user", "content": "hi"}]}, config)  # type: ignore[attr-defined]


def test_an_unreadable_classification_goes_to_a_human() -> None:
    # GIVEN a model whose classification misses the confidence and names no known route
    bad = AIMessage(
        content="",
        tool_calls=[tool_call("Classification", {"route": "sales", "reason": "?"}, "c1")],
    )
    graph = build_support(InMemorySaver(), ScriptedModel(script=[bad]))
    config = {"configurable": {"thread_id": "t"}}

    # WHEN a message is classified
    first = graph.invoke({"messages": [{"role": "user", "content": "hello"}]}, config)

    # THEN a human is asked, told why
    (asked,) = first["__interrupt__"]
    assert asked.value["action"]["confidence"] == 0.0
    assert asked.value["why"].startswith("the classifier's answer could not be read")


def test_a_model_that_is_unsure_is_checked_even_on_a_keyword_message() -> None:
    unsure = AIMessage(
        content="",
        tool_calls=[
            tool_call(
                "Classification",
                {"route": "technical", "confidence": 0.2, "reason": "could be billing"},
                "c1",
            )
        ],
    )
    graph = build_support(InMemorySaver(), ScriptedModel(script=[unsure]))
    config = {"configurable": {"thread_id": "t"}}
    first = graph.invoke({"messages": [{"role": "user", "content": "my invoice errors"}]}, config)
    assert first["__interrupt__"][0].value["action"]["route"] == "technical"

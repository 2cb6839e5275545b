"""The research graph on moto through the step worker: one superstep per SQS message, so each
model call and each round of tool calls is checkpointed before the next one starts."""

from __future__ import annotations

from typing import Any

import pytest

from graphs import registry
from graphs.research import build_graph
from graphs.research.tools import ResearchTool, default_tools
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

PRICE = "How much is the Team plan for 4 seats, 4 * 19 dollars a month?"
QUESTION: dict[str, Any] = {"messages": [{"role": "user", "content": PRICE}]}


def _deliver_one(stack: Stack) -> bool:
    batch = stack.receive(max_messages=1)
    if not batch:
        return False
    priority, message = batch[0]
    stack.deliver(priority, [message])
    return True


def _state(stack: Stack, thread_id: str) -> dict[str, Any]:
    return dict(stack.api("GET", f"/threads/{thread_id}/state").body)


def test_a_research_run_is_checkpointed_a_model_call_and_a_tool_round_at_a_time(
    stack: Stack,
) -> None:
    # GIVEN a question that needs the search tool and the calculator
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="research", input=QUESTION)

    # WHEN the worker gets its step messages one at a time
    seen: list[tuple[list[str], list[str]]] = []
    while _deliver_one(stack):
        state = _state(stack, thread_id)
        kinds = [m["type"] for m in state["values"]["messages"]]
        seen.append((state["next"], kinds))

    # THEN after each step the thread's checkpoint holds that step's work and names the next:
    # the model's tool calls, then both observations (one round, two parallel tasks), ...
    assert seen == [
        (["agent"], ["human"]),
        (["research", "research"], ["human", "ai"]),
        (["count_round"], ["human", "ai", "tool", "tool"]),
        (["agent"], ["human", "ai", "tool", "tool"]),
        (["check"], ["human", "ai", "tool", "tool", "ai"]),
        (["review"], ["human", "ai", "tool", "tool", "ai"]),
        (["answer"], ["human", "ai", "tool", "tool", "ai"]),
        ([], ["human", "ai", "tool", "tool", "ai"]),
    ]
    # AND the run succeeded with an answer citing the document and the calculation
    got = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert got["status"] == "success"
    assert got["usage"]["calls"] == 2  # the model: tool calls, then the answer
    values = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    calls = values["messages"][1]["tool_calls"]
    assert [c["name"] for c in calls] == ["search_docs", "calculator"]
    observations = values["messages"][2:4]
    assert [m["tool_call_id"] for m in observations] == [c["id"] for c in calls]
    assert [m["status"] for m in observations] == ["success", "success"]
    answer = values["messages"][-1]["content"]
    assert "[pricing]" in answer
    assert "4 * 19 = 76." in answer
    # AND history lists a checkpoint per step
    history = stack.api("POST", f"/threads/{thread_id}/history", {"limit": 20}).body
    assert len(history) == 10  # the input, __start__ and 8 steps


def test_a_failing_tool_through_the_worker_is_an_observation_and_the_run_answers(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the research graph with a search tool whose backend is down
    def down(query: str, k: int = 3) -> Any:
        raise ConnectionError("search backend unreachable")

    tools = default_tools()
    search = tools["search_docs"]
    tools["search_docs"] = ResearchTool(search.tool, down, search.result_schema)
    monkeypatch.setitem(
        registry.GRAPHS, "research-down", lambda cp, model: build_graph(cp, model, tools=tools)
    )

    # WHEN a question runs through the worker
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="research-down", input=QUESTION)
    stack.pump()

    # THEN the run succeeded: the failed search is an error observation (tried twice), the
    # calculator's result stands, and the answer says what could not be done
    got = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert got["status"] == "success"
    values = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    tool_messages = [m for m in values["messages"] if m["type"] == "tool"]
    assert [(m["name"], m["status"]) for m in tool_messages] == [
        ("search_docs", "error"),
        ("calculator", "success"),
        ("search_docs", "error"),
    ]
    assert "ConnectionError: search backend unreachable" in tool_messages[0]["content"]
    answer = values["messages"][-1]["content"]
    assert answer.startswith("I could not search the documentation")
    assert "4 * 19 = 76." in answer

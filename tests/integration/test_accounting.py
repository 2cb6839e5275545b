"""Token and cost accounting and the token/cost budgets, on moto through the real step worker.

The reference for what a run spent is LangChain's own usage callback
(``get_usage_metadata_callback``) around the same graph run in one process.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from functions.models.prices import price_table
from functions.store import Ending
from functions.webhooks.events import run_ended_detail
from graphs import registry
from graphs.offline_model import OfflineChatModel
from graphs.support import build_graph as build_support
from tests.integration.conftest import Stack

TEXT = {"messages": [{"role": "user", "content": "I was charged twice for my order"}]}


class _Chat(TypedDict, total=False):
    n: int
    replies: list[str]


def _chatty_factory(checkpointer: Any, model: BaseChatModel | None) -> Any:
    """Each superstep asks the model once; ten supersteps in all."""
    llm = model or OfflineChatModel()

    def ask(state: _Chat) -> _Chat:
        n = state.get("n", 0)
        reply = llm.invoke([HumanMessage(f"question number {n} about my invoice")])
        return {"n": n + 1, "replies": [*state.get("replies", []), str(reply.content)]}

    builder = StateGraph(_Chat)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_conditional_edges("ask", lambda s: "ask" if s.get("n", 0) < 10 else END)
    return builder.compile(checkpointer=checkpointer)


def _run(stack: Stack, thread_id: str, run_id: str) -> dict[str, Any]:
    reply = stack.api("GET", f"/threads/{thread_id}/runs/{run_id}")
    assert reply.status == 200, reply.body
    return dict(reply.body)


def _reference_usage(graph: Any, graph_input: Any) -> dict[str, Any]:
    with get_usage_metadata_callback() as callback:
        graph.invoke(graph_input, {"configurable": {"thread_id": "reference"}})
    return dict(callback.usage_metadata)


def test_a_runs_usage_is_what_langchain_counts_for_the_same_graph_and_is_priced(
    stack: Stack,
) -> None:
    # GIVEN what LangChain's usage callback counts for the support graph in one process
    reference = _reference_usage(build_support(InMemorySaver(), None), TEXT)
    assert set(reference) == {"offline"}
    expected = reference["offline"]

    # WHEN the same input runs on lambdagraph, one superstep per message
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=TEXT)
    stack.pump()

    # THEN GET run reports the same tokens, by model, priced from the table
    got = _run(stack, thread_id, run["run_id"])
    assert got["status"] == "success"
    usage = got["usage"]
    assert usage["input_tokens"] == expected["input_tokens"]
    assert usage["output_tokens"] == expected["output_tokens"]
    assert usage["total_tokens"] == expected["total_tokens"]
    assert usage["by_model"]["offline"]["calls"] == 2  # the classifier and one specialist
    price = price_table()["offline"]
    assert usage["cost_usd"] == pytest.approx(
        price.cost(expected["input_tokens"], expected["output_tokens"], 0)
    )
    assert usage["unpriced_models"] == []
    # AND attributed to the steps that made the calls (one call per model node's step)
    assert sum(s["total_tokens"] for s in usage["steps"]) == usage["total_tokens"]
    assert all(s["calls"] == 1 for s in usage["steps"])
    # AND the run-ended event (so the webhook payload, which spreads its run) carries them
    detail = run_ended_detail(
        stack.store.get_run(thread_id, run["run_id"]),  # type: ignore[arg-type]
        Ending("idle", []),
        "now",
    )
    assert detail["run"]["usage"] == detail["usage"] == usage


def test_a_token_budget_stops_the_run_at_the_step_boundary_with_the_figures(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a graph asking the model once per superstep, and what one such call costs
    monkeypatch.setitem(registry.GRAPHS, "chatty", _chatty_factory)
    per_call = _reference_usage(_chatty_factory(InMemorySaver(), None), {"n": 9})["offline"]
    tokens_per_step = per_call["total_tokens"]
    limit = tokens_per_step * 3 + 1  # the 4th call goes over

    # WHEN a run of it has budget max_tokens just above three steps' worth
    thread_id = stack.create_thread()
    run = stack.start_run(
        thread_id, assistant_id="chatty", input={"n": 0}, budget={"max_tokens": limit}
    )
    stack.pump()

    # THEN it ended error after step 4, the error naming the budget and the figures
    got = _run(stack, thread_id, run["run_id"])
    assert got["status"] == "error"
    spent = got["usage"]["total_tokens"]
    assert spent == tokens_per_step * 4
    assert got["error"] == (f"budget max_tokens={limit} exceeded: {spent:,} tokens after step 4")
    assert got["usage"]["by_model"]["offline"]["calls"] == 4
    # AND the thread keeps the state of those 4 steps and takes the next run
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    assert state["values"]["n"] == 4
    again = stack.start_run(thread_id, assistant_id="chatty", input={"n": 8})
    stack.pump()
    finished = _run(stack, thread_id, again["run_id"])
    assert finished["status"] == "success"
    assert finished["usage"]["by_model"]["offline"]["calls"] == 2  # its own usage only


def test_a_cost_budget_and_the_deployment_default_stop_runs(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setitem(registry.GRAPHS, "chatty", _chatty_factory)
    # GIVEN a deployment pricing the offline model at $1,000 per million output tokens and
    # capping every run at 50 tokens
    prices = json.dumps({"offline": {"input": 0, "output": 1000}})
    stack = Stack(moto_endpoint, model_prices=prices, budget_max_tokens=50)

    # WHEN one run asks for at most one cent and another gives no budget of its own
    cheap_thread, default_thread = stack.create_thread(), stack.create_thread()
    cheap = stack.start_run(
        cheap_thread, assistant_id="chatty", input={"n": 0}, budget={"max_cost_usd": 0.01}
    )
    default = stack.start_run(default_thread, assistant_id="chatty", input={"n": 0})
    stack.pump()

    # THEN the cost budget stopped the first as soon as a step took it over a cent
    got = _run(stack, cheap_thread, cheap["run_id"])
    assert got["status"] == "error", got
    cost = got["usage"]["cost_usd"]
    assert cost > 0.01
    steps = got["usage"]["steps"]
    assert sum(s["cost_usd"] for s in steps[:-1]) <= 0.01  # within budget until the last
    assert got["error"].startswith("budget max_cost_usd=0.01 exceeded: $")
    assert got["error"].endswith(f"after step {len(steps)}")
    # AND the deployment's token cap stopped the second
    other = _run(stack, default_thread, default["run_id"])
    assert other["status"] == "error"
    assert other["error"].startswith("budget max_tokens=50 exceeded: ")
    assert other["usage"]["total_tokens"] > 50


def test_a_failed_attempts_model_calls_count(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a node that asks the model and then meets an AWS failure on its first attempt
    calls = {"n": 0}

    def factory(checkpointer: Any, model: BaseChatModel | None) -> Any:
        llm = model or OfflineChatModel()

        def ask(state: _Chat) -> _Chat:
            reply = llm.invoke([HumanMessage("is my refund on its way")])
            calls["n"] += 1
            if calls["n"] == 1:
                raise ClientError(
                    {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "Query"
                )
            return {"n": 1, "replies": [str(reply.content)]}

        builder = StateGraph(_Chat)
        builder.add_node("ask", ask)
        builder.add_edge(START, "ask")
        builder.add_edge("ask", END)
        return builder.compile(checkpointer=checkpointer)

    monkeypatch.setitem(registry.GRAPHS, "flaky", factory)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="flaky", input={"n": 0})

    # WHEN the step fails once and is retried
    stack.pump()

    # THEN the run succeeded and its usage counts both attempts' calls, on the one step
    got = _run(stack, thread_id, run["run_id"])
    assert got["status"] == "success"
    assert calls["n"] == 2
    assert got["usage"]["by_model"]["offline"]["calls"] == 2
    assert [s["step"] for s in got["usage"]["steps"]] == [1]


def test_an_unpriced_model_is_counted_in_tokens_and_named(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a graph whose model reports a name the price table does not list
    def factory(checkpointer: Any, model: BaseChatModel | None) -> Any:
        return _chatty_factory(checkpointer, OfflineChatModel(model_name="house-model-7"))

    monkeypatch.setitem(registry.GRAPHS, "house", factory)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="house", input={"n": 8})
    stack.pump()

    # THEN its tokens count, its cost is 0 and it is listed as unpriced
    usage = _run(stack, thread_id, run["run_id"])["usage"]
    assert usage["by_model"]["house-model-7"]["calls"] == 2
    assert usage["total_tokens"] > 0
    assert usage["cost_usd"] == 0
    assert usage["unpriced_models"] == ["house-model-7"]


def test_usage_survives_a_message_that_has_none() -> None:
    # An AIMessage without usage_metadata (a provider that reports none) counts nothing.
    from functions.models.meter import UsageMeter

    meter = UsageMeter()

    class Quiet(OfflineChatModel):
        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            from langchain_core.outputs import ChatGeneration, ChatResult

            return ChatResult(generations=[ChatGeneration(message=AIMessage("hello"))])

    Quiet().invoke("hi", {"callbacks": [meter]})
    assert meter.take() == {}


def test_step_usage_is_emitted_as_metrics_by_model(capsys: pytest.CaptureFixture[str]) -> None:
    from functions.models.usage import ModelUsage, emit_step_metrics

    emit_step_metrics(
        {"gpt-4o-mini": ModelUsage(calls=2, input_tokens=1000, output_tokens=500)},
        price_table(),
    )
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"_aws"' in x]
    assert line["model"] == "gpt-4o-mini"
    assert ["model", "service"] in line["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert line["ModelCalls"] == [2.0]
    assert line["ModelInputTokens"] == [1000.0]
    assert line["ModelOutputTokens"] == [500.0]
    assert line["ModelCostUSD"] == [pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)]


def test_the_budget_error_reads_as_the_issue_writes_it() -> None:
    from functions.models.usage import Limits, exceeded

    assert (
        exceeded({"total_tokens": 2314, "cost_usd": 0.0}, Limits(max_tokens=2000), "after step 4")
        == "budget max_tokens=2000 exceeded: 2,314 tokens after step 4"
    )
    assert exceeded({"total_tokens": 1999}, Limits(max_tokens=2000), "after step 4") is None

"""Models per node and per run (functions/models/routing.py), through the real step worker
on moto: the support classifier on one model, its specialists on another, a run that picks
its own; usage is accounted under the model that answered."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph

from functions.models.factory import ModelSpecError
from functions.models.routing import ModelMaker, RoutedChatModel, parse_routes
from functions.settings import Settings
from graphs.offline_model import OfflineChatModel
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

TEXT = {"messages": [{"role": "user", "content": "I was charged twice for my order"}]}


def _by_model(stack: Stack, thread_id: str, run_id: str) -> dict[str, Any]:
    run = stack.api("GET", f"/threads/{thread_id}/runs/{run_id}").body
    assert run["status"] == "success", run
    return dict(run["usage"]["by_model"])


def test_the_deployment_puts_each_node_on_its_model(moto_endpoint: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # GIVEN a deployment whose support classifier runs on a cheap model, billing on another
    routes = {"support.classify": "fake:cheap-classifier", "billing": "fake:strong-specialist"}
    stack = Stack(moto_endpoint, models=json.dumps(routes))
    thread_id = stack.create_thread()

    # WHEN a billing question runs
    run = stack.start_run(thread_id, input=TEXT)
    stack.pump()

    # THEN each model call was made by the node's model (the usage says which answered)
    by_model = _by_model(stack, thread_id, run["run_id"])
    assert set(by_model) == {"cheap-classifier", "strong-specialist"}
    assert by_model["cheap-classifier"]["calls"] == 1
    assert by_model["strong-specialist"]["calls"] == 1
    # AND the answer is the graph's own: routing changed the model, not the graph
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    assert state["values"]["route"].startswith("billing")


def test_a_run_picks_its_models_among_those_allowed(moto_endpoint: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    stack = Stack(moto_endpoint, run_models="fake:run-pick,fake:other")
    thread_id = stack.create_thread()
    # WHEN a run asks for one model for all its nodes
    config = {"configurable": {"models": {"default": "fake:run-pick"}}}
    run = stack.start_run(thread_id, input=TEXT, config=config)
    stack.pump()
    # THEN every call was made by it
    assert set(_by_model(stack, thread_id, run["run_id"])) == {"run-pick"}
    # AND a node-specific choice wins over the run's default
    config = {"configurable": {"models": {"default": "fake:run-pick", "classify": "fake:other"}}}
    run = stack.start_run(thread_id, input=TEXT, config=config)
    stack.pump()
    assert set(_by_model(stack, thread_id, run["run_id"])) == {"run-pick", "other"}


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"default": "openai:gpt-4o"}, "is not one runs may pick here"),
        ({"classify": "nonsense"}, "is not 'provider:model'"),
        ({"classify": 3}, "must map node names"),
        ("fake:run-pick", "must map node names"),
    ],
)
def test_a_run_asking_for_a_model_it_may_not_use_is_refused_with_422(
    moto_endpoint: str, monkeypatch: Any, models: Any, message: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    stack = Stack(moto_endpoint, run_models="fake:run-pick")
    thread_id = stack.create_thread()
    reply = stack.api(
        "POST",
        f"/threads/{thread_id}/runs",
        {"assistant_id": "support", "input": TEXT, "config": {"configurable": {"models": models}}},
    )
    assert reply.status == 422, reply.body
    assert message in json.dumps(reply.body)
    assert stack.api("GET", f"/threads/{thread_id}/runs").body == []


def test_a_deployment_lets_runs_pick_no_model_unless_it_says_so(stack: Stack) -> None:
    thread_id = stack.create_thread()
    reply = stack.api(
        "POST",
        f"/threads/{thread_id}/runs",
        {
            "assistant_id": "support",
            "input": TEXT,
            "config": {"configurable": {"models": {"default": "fake:offline"}}},
        },
    )
    assert reply.status == 422
    assert "LAMBDAGRAPH_RUN_MODELS" in json.dumps(reply.body)


def test_malformed_deployment_routes_fail_when_settings_are_read() -> None:
    with pytest.raises(ModelSpecError, match="must map node names"):
        parse_routes('["support.classify"]')
    with pytest.raises(ValueError, match="not 'provider:model'"):
        Settings(models='{"classify": "gpt-4o"}')


def test_tools_are_formatted_by_the_model_chosen_at_call_time() -> None:
    # GIVEN two providers formatting tools differently, chosen per node
    class Formats(OfflineChatModel):
        style: str = "a"

        def bind_tools(self, tools: Any, **kw: Any) -> Any:
            return self.bind(tools=[f"{self.style}:{t.name}" for t in tools])

        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            message = AIMessage(json.dumps(kw.get("tools")))
            return ChatResult(generations=[ChatGeneration(message=message)])

    @tool
    def lookup(order: str) -> str:
        """Look an order up."""
        return order

    models = {"fake:a": Formats(style="a"), "fake:b": Formats(style="b")}
    routed = RoutedChatModel(
        default=models["fake:a"],
        routes={"second": "fake:b"},
        make=ModelMaker(models.__getitem__),
    )
    bound = routed.bind_tools([lookup])

    def first(state: MessagesState) -> Any:
        return {"messages": [bound.invoke(state["messages"])]}

    def second(state: MessagesState) -> Any:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = (
        StateGraph(MessagesState)
        .add_node("first", first)
        .add_node("second", second)
        .add_edge(START, "first")
        .add_edge("first", "second")
        .compile()
    )
    out = graph.invoke({"messages": [HumanMessage("where is order 7")]})
    assert [json.loads(str(m.content)) for m in out["messages"][1:]] == [
        ["a:lookup"],
        ["b:lookup"],
    ]


@pytest.mark.parametrize("stored", ["sk-test-123", json.dumps({"api_key": "sk-test-123"})])
def test_the_openai_key_is_read_from_its_secret_on_aws(
    moto_endpoint: str, monkeypatch: Any, stored: str
) -> None:
    import boto3

    from functions.models.factory import openai_api_key

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    secrets = boto3.client("secretsmanager", endpoint_url=moto_endpoint)
    arn = secrets.create_secret(Name=f"openai-{len(stored)}", SecretString=stored)["ARN"]
    monkeypatch.setenv("LAMBDAGRAPH_OPENAI_API_KEY_SECRET_ARN", arn)
    assert openai_api_key() == "sk-test-123"
    monkeypatch.delenv("LAMBDAGRAPH_OPENAI_API_KEY_SECRET_ARN")
    from functions.settings import get_settings

    get_settings.cache_clear()
    assert openai_api_key() is None  # ChatOpenAI then reads OPENAI_API_KEY itself


def test_with_langsmith_tracing_on_each_invocation_sends_its_traces_before_returning(
    moto_endpoint: str, monkeypatch: Any
) -> None:
    import langchain_core.tracers.langchain as tracers

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    flushed: list[int] = []
    monkeypatch.setattr(tracers, "wait_for_all_tracers", lambda: flushed.append(1))
    # GIVEN a worker whose deployment sets LANGSMITH_TRACING (LangChain then traces itself)
    stack = Stack(moto_endpoint, langsmith_tracing=True)
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=TEXT)
    # WHEN its step messages are handled, one invocation each
    invocations = stack.pump()
    # THEN every invocation waited for the tracers before returning (Lambda freezes after)
    assert invocations >= 2
    assert len(flushed) == invocations
    # AND without tracing none does
    flushed.clear()
    plain = Stack(moto_endpoint)
    plain.start_run(plain.create_thread(), input=TEXT)
    plain.pump()
    assert flushed == []


def test_a_graph_wide_model_covers_the_nodes_not_named(
    moto_endpoint: str, monkeypatch: Any
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # GIVEN support on one model except its classifier
    routes = {"support.*": "fake:graph-wide", "support.classify": "fake:cheap-classifier"}
    stack = Stack(moto_endpoint, models=json.dumps(routes))
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=TEXT)
    stack.pump()
    assert set(_by_model(stack, thread_id, run["run_id"])) == {"graph-wide", "cheap-classifier"}

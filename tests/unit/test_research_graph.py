"""The research graph: a ReAct agent over the shipped documents, its tools and its reviewer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from graphs.offline_model import REVIEWER_NAME, OfflineChatModel, arithmetic_in
from graphs.registry import get_factory
from graphs.research import build_graph, prompts
from graphs.research.tools import (
    ResearchTool,
    UnsafeExpression,
    calculator,
    default_tools,
    evaluate,
    load_docs,
    run_tool,
    search_docs,
)
from tests.fake_models import ScriptedModel, tool_call

SUPERSTEP = "What is a superstep?"
PRICE = "How much is the Team plan for 4 seats, 4 * 19 dollars a month?"


def _ask(graph: Any, text: str, thread: str = "t", **configurable: Any) -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread, **configurable}}
    return dict(graph.invoke({"messages": [{"role": "user", "content": text}]}, config))


def _tools(messages: list[Any]) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


def _with_search(func: Any) -> dict[str, ResearchTool]:
    """The shipped tools with the search tool's work replaced by ``func``."""
    tools = default_tools()
    search = tools["search_docs"]
    tools["search_docs"] = ResearchTool(search.tool, func, search.result_schema)
    return tools


# --- the documents and the tools ---------------------------------------------------------


def test_a_dozen_documents_ship_with_the_graph() -> None:
    docs = load_docs()
    assert len(docs) == 12
    assert all(d.title and d.text for d in docs)


def test_search_finds_the_document_about_the_question() -> None:
    result = search_docs(SUPERSTEP)
    assert result["hits"][0]["id"] == "supersteps"
    assert len(result["hits"]) <= 3
    assert search_docs("zzzz qqqq")["hits"] == []


@pytest.mark.parametrize(
    ("expression", "value"),
    [("4 * 19", 76), ("(120 - 20) / 4", 25), ("2 ** 10", 1024), ("-3 + 10 % 4", -1), ("7/2", 3.5)],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert calculator(expression) == {"expression": expression, "value": value}


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd').read()",
        "x + 1",
        "(1).__class__",
        "[1, 2][0]",
        "lambda: 1",
        "2 ** 1000",
        "9 ** 9 ** 9",
        "10 ** 15 * 10 ** 15",
        "1 / 0",
        "True + 1",
        "'a' * 3",
        "1 +",
        "1" * 300,
    ],
)
def test_calculator_refuses_anything_but_small_arithmetic(expression: str) -> None:
    with pytest.raises(UnsafeExpression):
        evaluate(expression)


def test_an_unsafe_expression_is_an_error_observation() -> None:
    call = tool_call("calculator", {"expression": "__import__('os').getcwd()"}, "c1")
    observation = run_tool(call, default_tools(), timeout_s=1)  # type: ignore[arg-type]
    assert observation.status == "error"
    assert "Call is not allowed" in str(observation.content)
    assert observation.tool_call_id == "c1"


@pytest.mark.parametrize(
    ("args", "problem"),
    [({}, "query: Field required"), ({"query": ""}, "query"), ({"query": "x", "k": 99}, "k")],
)
def test_arguments_are_checked_against_the_tools_schema(args: dict[str, Any], problem: str) -> None:
    observation = run_tool(tool_call("search_docs", args, "c1"), default_tools(), timeout_s=1)  # type: ignore[arg-type]
    assert observation.status == "error"
    assert "invalid arguments for search_docs" in str(observation.content)
    assert problem in str(observation.content)


def test_the_offline_model_finds_arithmetic_in_a_question() -> None:
    assert arithmetic_in(PRICE) == "4 * 19"
    assert arithmetic_in(SUPERSTEP) is None


# --- the graph with the offline model ----------------------------------------------------


def test_the_registry_builds_research_with_the_offline_model() -> None:
    result = _ask(get_factory("research")(InMemorySaver(), None), SUPERSTEP)
    assert "[supersteps]" in result["messages"][-1].content


def test_the_agent_searches_then_answers_citing_the_documents() -> None:
    # WHEN a question comes in
    result = _ask(build_graph(InMemorySaver()), SUPERSTEP)

    # THEN the model called the search tool, observed its hits, and answered citing them
    human, call, observation, answer = result["messages"]
    assert isinstance(human, HumanMessage)
    assert [c["name"] for c in call.tool_calls] == ["search_docs"]
    assert observation.status == "success"
    assert observation.tool_call_id == call.tool_calls[0]["id"]
    assert answer.content.startswith("A superstep is one round of a workflow")
    assert "[supersteps]" in answer.content
    assert result["notes"] == [
        "plan: search the docs",
        "search: 3 hits",
        "check: draft accepted",
        "answer: published",
    ]


def test_arithmetic_goes_to_the_calculator_in_the_same_round() -> None:
    result = _ask(build_graph(InMemorySaver()), PRICE)

    calls = result["messages"][1].tool_calls
    assert [c["name"] for c in calls] == ["search_docs", "calculator"]
    assert calls[1]["args"] == {"expression": "4 * 19"}
    assert all(m.status == "success" for m in _tools(result["messages"]))
    answer = result["messages"][-1].content
    assert "The Team plan costs $19 per seat" in answer
    assert "[pricing]" in answer
    assert "4 * 19 = 76." in answer


def test_the_offline_model_answers_the_same_every_time() -> None:
    first = _ask(build_graph(InMemorySaver()), PRICE)["messages"]
    second = _ask(build_graph(InMemorySaver()), PRICE)["messages"]
    assert [m.content for m in first] == [m.content for m in second]
    assert first[1].tool_calls == second[1].tool_calls


def test_each_model_call_and_each_round_of_tool_calls_is_a_superstep() -> None:
    graph = build_graph(InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    graph_input = {"messages": [{"role": "user", "content": PRICE}]}

    # WHEN the graph runs one superstep at a time, as the step worker runs it
    steps = []
    stream_input: Any = graph_input
    while True:
        ran = [
            node
            for update in graph.stream(
                stream_input, config, stream_mode="updates", interrupt_after="*"
            )
            for node in update
            if node != "__interrupt__"
        ]
        if not ran:
            break
        steps.append(sorted(ran))
        stream_input = None

    # THEN each model call, each round of tool calls (its calls in parallel) and each
    # check is a superstep of its own, in the parent graph
    assert steps == [
        ["plan"],
        ["agent"],
        ["research", "research"],
        ["count_round"],
        ["agent"],
        ["check"],
        ["review"],
        ["answer"],
    ]


def test_tools_write_progress_events_and_the_model_streams_tokens() -> None:
    graph = build_graph(InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    graph_input = {"messages": [{"role": "user", "content": SUPERSTEP}]}

    parts = [
        (mode, data)
        for _ns, mode, data in graph.stream(
            graph_input, config, stream_mode=["custom", "messages"], subgraphs=True
        )
    ]

    custom = [data for mode, data in parts if mode == "custom"]
    assert custom == [
        {"stage": "plan", "status": "planning"},
        {"stage": "search", "status": "started"},
        {"stage": "search", "status": "done", "hits": 3},
    ]
    tokens = [data[0].content for mode, data in parts if mode == "messages" and data[0].content]
    assert len(tokens) > 5


def test_a_human_review_holds_or_publishes_the_answer() -> None:
    graph = build_graph(InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    graph_input = {"messages": [{"role": "user", "content": SUPERSTEP}], "review": True}

    first = graph.invoke(graph_input, config)
    (asked,) = first["__interrupt__"]
    assert asked.value["question"] == "Publish this answer?"
    assert "[supersteps]" in asked.value["answer"]

    done = graph.invoke(Command(resume=False), config)
    assert done["notes"][-1] == "answer: held"


def test_a_second_question_gets_its_own_tool_rounds() -> None:
    graph = build_graph(InMemorySaver())
    _ask(graph, SUPERSTEP, max_tool_rounds=1)
    result = _ask(graph, PRICE, max_tool_rounds=1)
    assert "4 * 19 = 76." in result["messages"][-1].content
    assert "agent: stopped after 1 tool rounds" not in result["notes"]


@pytest.mark.parametrize(
    "options",
    [{"max_tool_rounds": 0}, {"max_revisions": -1}, {"tool_timeout_s": "soon"}],
)
def test_invalid_options_fail_saying_which(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="research graph options"):
        _ask(build_graph(InMemorySaver()), SUPERSTEP, **options)


# --- tools that fail, hang or return malformed data --------------------------------------


def test_a_failing_tool_is_an_error_observation_and_the_run_still_answers() -> None:
    def broken(query: str, k: int = 3) -> Any:
        raise RuntimeError("index unavailable")

    # WHEN the search tool raises on every call
    result = _ask(build_graph(InMemorySaver(), tools=_with_search(broken)), SUPERSTEP)

    # THEN the model saw the error, tried once more, and answered saying so
    errors = _tools(result["messages"])
    assert [m.status for m in errors] == ["error", "error"]
    assert "search_docs failed: RuntimeError: index unavailable" in str(errors[0].content)
    answer = result["messages"][-1]
    assert isinstance(answer, AIMessage)
    assert not answer.tool_calls
    assert answer.content.startswith("I could not search the documentation")
    assert result["notes"][-2:] == ["check: draft accepted", "answer: published"]


def test_a_tool_that_fails_once_is_retried_and_its_result_used() -> None:
    calls = {"n": 0}

    def flaky(query: str, k: int = 3) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("reset by peer")
        return search_docs(query, k)

    result = _ask(build_graph(InMemorySaver(), tools=_with_search(flaky)), SUPERSTEP)

    assert [m.status for m in _tools(result["messages"])] == ["error", "success"]
    assert "[supersteps]" in result["messages"][-1].content


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # lets the hung tool's thread end


def test_a_hanging_tool_times_out_into_an_error_observation(release: threading.Event) -> None:
    def hangs(query: str, k: int = 3) -> Any:
        release.wait(30)
        return search_docs(query, k)

    # WHEN the search tool hangs past the per-tool timeout
    graph = build_graph(InMemorySaver(), tools=_with_search(hangs))
    result = _ask(graph, SUPERSTEP, tool_timeout_s=0.2)

    # THEN each call was given up after the timeout and the run still answered
    observations = _tools(result["messages"])
    assert [m.status for m in observations] == ["error", "error"]
    assert "search_docs timed out after 0.2 s" in str(observations[0].content)
    assert result["messages"][-1].content.startswith("I could not search the documentation")


@pytest.mark.parametrize(
    "malformed",
    [None, "three hits", {"hits": "none"}, {"query": "q", "hits": [{"id": 1}]}],
    ids=["none", "text", "wrong-type", "incomplete-hit"],
)
def test_malformed_tool_output_is_an_error_observation(malformed: Any) -> None:
    result = _ask(
        build_graph(InMemorySaver(), tools=_with_search(lambda **_: malformed)), SUPERSTEP
    )

    observation = _tools(result["messages"])[0]
    assert observation.status == "error"
    assert "search_docs returned malformed data" in str(observation.content)
    assert isinstance(result["messages"][-1], AIMessage)


def test_tool_calls_the_model_gets_wrong_are_error_observations() -> None:
    # GIVEN a model that calls a tool that does not exist, gives invalid arguments, and
    # sends arguments that are not JSON, then answers
    wrong = AIMessage(
        content="",
        tool_calls=[
            tool_call("browse_web", {"url": "x"}, "c1"),
            tool_call("calculator", {"expr": "1+1"}, "c2"),
        ],
        invalid_tool_calls=[
            {"name": "search_docs", "args": "{query: ", "id": "c3", "error": "bad json"}
        ],
    )
    model = ScriptedModel(script=[wrong, AIMessage(content="Sorry, my tools failed.")])

    result = _ask(build_graph(InMemorySaver(), model), SUPERSTEP)

    # THEN every call got an error observation naming what was wrong, and the run answered
    observations = {m.tool_call_id: m for m in _tools(result["messages"])}
    assert {k: m.status for k, m in observations.items()} == {
        "c1": "error",
        "c2": "error",
        "c3": "error",
    }
    assert "unknown tool 'browse_web'" in str(observations["c1"].content)
    assert "invalid arguments for calculator" in str(observations["c2"].content)
    assert "arguments for search_docs are not valid JSON: {query: " in str(
        observations["c3"].content
    )
    assert result["messages"][-1].content == "Sorry, my tools failed."
    # AND the model was offered the graph's tools
    assert {t.name for t in model.bound_tools} == {"search_docs", "calculator"}


# --- the iteration cap and the reviewer --------------------------------------------------


def test_the_iteration_cap_holds_for_a_model_that_never_stops_calling_tools() -> None:
    # GIVEN a model that asks for a search every time
    forever = AIMessage(
        content="", tool_calls=[tool_call("search_docs", {"query": "superstep"}, "s")]
    )
    model = ScriptedModel(script=[forever])

    # WHEN it runs with at most 2 rounds of tool calls
    result = _ask(build_graph(InMemorySaver(), model), SUPERSTEP, max_tool_rounds=2)

    # THEN two rounds ran, the third request was answered "not run", and the run ended
    assert len(model.seen) == 3
    statuses = [m.status for m in _tools(result["messages"])]
    assert statuses == ["success", "success", "error"]
    assert "the limit of 2 rounds of tool calls was reached" in str(
        _tools(result["messages"])[-1].content
    )
    answer = result["messages"][-1].content
    assert answer.startswith("I could not finish the research within 2 rounds of tool calls.")
    assert "[supersteps]" in answer
    assert "agent: stopped after 2 tool rounds" in result["notes"]


def _search_then(*answers: str) -> ScriptedModel:
    search = AIMessage(
        content="", tool_calls=[tool_call("search_docs", {"query": "superstep"}, "s")]
    )
    return ScriptedModel(script=[search, *(AIMessage(content=a) for a in answers)])


def test_the_reviewer_sends_back_a_draft_without_citations() -> None:
    # GIVEN a model whose first draft cites nothing and whose second cites its source
    model = _search_then("A superstep is a round.", "A superstep is a round [supersteps].")

    result = _ask(build_graph(InMemorySaver(), model), SUPERSTEP)

    # THEN the reviewer's note went back to the model, which revised the answer
    notes = [
        m for m in result["messages"] if isinstance(m, HumanMessage) and m.name == REVIEWER_NAME
    ]
    assert len(notes) == 1
    assert "cite the documents you used as [doc-id]" in notes[0].content
    assert "[supersteps]" in notes[0].content
    assert model.seen[-1][-1].content == notes[0].content
    assert result["messages"][-1].content == "A superstep is a round [supersteps]."
    assert result["notes"][-3:] == [
        "check: sent back",
        "check: draft accepted",
        "answer: published",
    ]


def test_the_reviewer_refuses_a_citation_no_search_returned() -> None:
    model = _search_then("See [made-up-doc].", "A superstep is a round [supersteps].")
    result = _ask(build_graph(InMemorySaver(), model), SUPERSTEP)
    note = next(m for m in result["messages"] if getattr(m, "name", None) == REVIEWER_NAME)
    assert "[made-up-doc], which no search returned" in note.content


def test_the_reviewer_gives_up_after_max_revisions() -> None:
    model = _search_then("No sources.")
    result = _ask(build_graph(InMemorySaver(), model), SUPERSTEP, max_revisions=2)
    assert len(model.seen) == 4  # the search, the draft and two revisions
    assert result["notes"][-2].startswith("check: accepted with problems: cite the documents")


def test_the_offline_model_revises_after_a_reviewer_note_without_searching_again() -> None:
    # GIVEN a turn that searched, answered, and was sent back
    graph_turn = _ask(build_graph(InMemorySaver()), SUPERSTEP)["messages"]
    note = HumanMessage(content="Reviewer: please revise the answer.", name=REVIEWER_NAME)

    # WHEN the offline model answers the note
    model = OfflineChatModel().bind_tools([t.tool for t in default_tools().values()])
    reply = model.invoke([SystemMessage(prompts.AGENT), *graph_turn, note])

    # THEN it answers again from the observations it has, calling no tool
    assert not reply.tool_calls  # type: ignore[attr-defined]
    assert "[supersteps]" in str(reply.content)

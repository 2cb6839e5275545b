"""One superstep per call, and the outcome it reports."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from functions.executor import run_superstep, thread_config
from graphs.registry import get_factory


def _graph() -> Any:
    return get_factory("support")(InMemorySaver(), None)


def _user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def test_each_call_runs_one_superstep_until_done() -> None:
    # GIVEN a fresh thread
    graph = _graph()
    config = thread_config("t1")

    # WHEN supersteps are run one call at a time
    outcomes = [run_superstep(graph, _user("refund"), config)]
    while outcomes[-1].outcome == "continue":
        outcomes.append(run_superstep(graph, None, config))

    # THEN classify, billing and finalize each took one call, the last reports done
    assert [o.outcome for o in outcomes] == ["continue", "continue", "done"]
    assert [o.next_nodes for o in outcomes] == [["billing"], ["finalize"], []]
    # AND the first call reports no earlier checkpoint (new thread); each call a new head
    assert outcomes[0].start_checkpoint_id is None
    assert len({o.checkpoint_id for o in outcomes}) == 3
    assert outcomes[-1].values["route"] == "billing:done"


def test_second_run_starts_from_the_previous_head() -> None:
    graph = _graph()
    config = thread_config("t2")
    result = run_superstep(graph, _user("refund"), config)
    while result.outcome == "continue":
        result = run_superstep(graph, None, config)

    # WHEN a new input arrives on the same thread
    second = run_superstep(graph, _user("hello"), config)

    # THEN its starting checkpoint is the head the first run left
    assert second.start_checkpoint_id == result.checkpoint_id


def test_interrupt_is_reported_with_its_value_and_resume_continues() -> None:
    graph = _graph()
    config = thread_config("t3")
    result = run_superstep(graph, _user("cancel my account"), config)
    while result.outcome == "continue":
        result = run_superstep(graph, None, config)

    # THEN the escalation interrupt is reported by task
    assert result.outcome == "interrupted"
    (interrupts,) = result.interrupts.values()
    assert interrupts[0]["value"]["action"] == "cancel_account"
    assert interrupts[0]["id"]

    # WHEN resumed
    resumed = run_superstep(graph, Command(resume="yes"), config)
    while resumed.outcome == "continue":
        resumed = run_superstep(graph, None, config)

    # THEN it finishes with the approval reply
    assert resumed.outcome == "done"
    assert resumed.values["messages"][-1]["content"].startswith("A colleague approved it")


def test_stepping_a_finished_thread_reports_done() -> None:
    graph = _graph()
    config = thread_config("t4")
    result = run_superstep(graph, _user("hi"), config)
    while result.outcome == "continue":
        result = run_superstep(graph, None, config)
    assert run_superstep(graph, None, config).outcome == "done"

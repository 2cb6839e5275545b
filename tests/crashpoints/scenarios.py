"""The scenarios the crash-point harness replays.

Each is a client script against the API (a careful client: after a failed request it checks,
then retries only what did not happen) followed by recovery until the system is quiescent.
``SCENARIOS`` are kept small for ``make test`` (every call index of each is replayed twice);
``BENCH_SCENARIOS`` are the bigger ones ``python -m bench crashpoints`` adds.
"""

from __future__ import annotations

from typing import Any

from tests.crashpoints.graphs import FANOUT_ID
from tests.crashpoints.harness import Replay, Scenario


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


BILLING = user("I was charged twice on my invoice")
TECHNICAL = user("the app crashes with an error")
GENERAL = user("hello there")
CANCEL_ACCOUNT = user("Please cancel my account")
APPROVE = {"resume": {"decision": "approve", "approved": True}}
T = "thread-1"


def _runs(outcome: dict[str, Any], thread_id: str = T) -> dict[str, str]:
    return {r["ref"]: r["status"] for r in outcome[thread_id]["runs"]}


def _ai_texts(outcome: dict[str, Any], thread_id: str = T) -> list[str]:
    messages = (outcome[thread_id]["state"]["values"] or {}).get("messages", [])
    return [m["content"] for m in messages if m.get("type") == "ai"]


# --- support: classifier -> specialist -> finalize ------------------------------------------


def _support(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", input=BILLING)


def _expect_support(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success"}, _runs(outcome)
    assert outcome[T]["status"] == "idle"
    assert len(_ai_texts(outcome)) == 1


SUPPORT = Scenario(
    "support", _support, expect=_expect_support, description="one support run (billing)"
)


# --- parallel branches ---------------------------------------------------------------------


def _fanout(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", assistant_id=FANOUT_ID, input={"topic": "x", "notes": []})


def _expect_fanout(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success"}, _runs(outcome)
    assert outcome[T]["state"]["values"]["summary"] == "left + right + split x"


FANOUT = Scenario(
    "parallel", _fanout, expect=_expect_fanout, description="fan-out: two branches in one step"
)


# --- interrupt() and its resume -------------------------------------------------------------


def _interrupt(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", input=CANCEL_ACCOUNT)
    r.settle()
    r.create_run(T, "r2", command=APPROVE)


def _expect_interrupt(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success", "r2": "success"}, _runs(outcome)
    assert outcome[T]["status"] == "idle"
    assert "__interrupt__" in outcome[T]["runs"][0]["values"]
    assert _ai_texts(outcome)[-1].startswith("A colleague approved it")


INTERRUPT = Scenario(
    "interrupt",
    _interrupt,
    expect=_expect_interrupt,
    description="a run stops at interrupt(); a second run resumes it",
)


# --- two runs enqueued on one thread --------------------------------------------------------


def _enqueue(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", input=BILLING)
    r.create_run(T, "r2", input=TECHNICAL, multitask_strategy="enqueue")


def _expect_enqueue(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success", "r2": "success"}, _runs(outcome)
    assert outcome[T]["status"] == "idle"
    assert len(_ai_texts(outcome)) == 2


ENQUEUE = Scenario(
    "enqueue", _enqueue, expect=_expect_enqueue, description="a second run enqueued behind one"
)


# --- rollback of a run mid-way ---------------------------------------------------------------


EARLIER = {
    "messages": [
        {"role": "user", "content": "I was charged twice on my invoice"},
        {"role": "assistant", "content": "Refunded."},
    ],
    "route": "billing:done",
}


def _rollback_setup(r: Replay) -> None:
    # The thread has state before the rolled-back run: the rollback must return to it.
    r.create_thread(T)
    r.update_state(T, values=EARLIER, as_node="finalize")


def _rollback(r: Replay) -> None:
    r.create_run(T, "r1", input=TECHNICAL)
    r.settle(until=r.sent("r1", 2))  # r1 is mid-way: its first step is done
    r.create_run(T, "r2", input=GENERAL, multitask_strategy="rollback")


def _expect_rollback(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r2": "success"}, _runs(outcome)
    assert outcome[T]["status"] == "idle"
    texts = _ai_texts(outcome)
    assert texts == ["Refunded.", texts[-1]], texts
    assert texts[-1].startswith("Thanks"), texts


ROLLBACK = Scenario(
    "rollback",
    _rollback,
    setup=_rollback_setup,
    expect=_expect_rollback,
    description="a run on a thread with history is rolled back after its first step",
)


# --- cancel of a run whose step is stuck -----------------------------------------------------


def _cancel_stuck(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", input=BILLING)
    r.stick("r1", 2, after_calls=1)  # the worker of step 2 dies right after its claim
    r.settle(until=r.stuck_fired("r1", 2))
    r.cancel("r1")


def _expect_cancel_stuck(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "interrupted"}, _runs(outcome)
    assert outcome[T]["status"] == "idle"
    assert outcome[T]["state"]["next"] == ["billing"]


CANCEL_STUCK = Scenario(
    "cancel_stuck",
    _cancel_stuck,
    expect=_expect_cancel_stuck,
    description="a run whose step-2 worker died after claiming it is cancelled",
)

SCENARIOS: list[Scenario] = [SUPPORT, FANOUT, INTERRUPT, ENQUEUE, ROLLBACK, CANCEL_STUCK]


# --- bigger ones, for the benchmark sweep ----------------------------------------------------


def _conversation(r: Replay) -> None:
    r.create_thread(T)
    for i, text in enumerate((BILLING, TECHNICAL, GENERAL), start=1):
        r.create_run(T, f"r{i}", input=text)
        r.settle()


def _expect_conversation(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success", "r2": "success", "r3": "success"}
    assert len(_ai_texts(outcome)) == 3


def _enqueue_three(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", input=BILLING)
    r.create_run(T, "r2", input=TECHNICAL, multitask_strategy="enqueue")
    r.create_run(T, "r3", input=GENERAL, multitask_strategy="enqueue")


def _expect_enqueue_three(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success", "r2": "success", "r3": "success"}
    assert len(_ai_texts(outcome)) == 3


def _two_threads(r: Replay) -> None:
    r.create_thread(T)
    r.create_thread("thread-2")
    r.create_run(T, "r1", input=CANCEL_ACCOUNT)
    r.create_run("thread-2", "r2", assistant_id=FANOUT_ID, input={"topic": "y"}, priority="high")
    r.settle()
    r.create_run(T, "r3", command={"resume": {"decision": "reject", "approved": False}})


def _expect_two_threads(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success", "r3": "success"}
    assert _runs(outcome, "thread-2") == {"r2": "success"}
    assert _ai_texts(outcome)[-1].startswith("A colleague reviewed")


def _interrupt_then_enqueue(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", input=BILLING)
    r.settle(until=r.sent("r1", 2))
    r.create_run(T, "r2", input=GENERAL, multitask_strategy="interrupt")


def _expect_interrupt_strategy(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "interrupted", "r2": "success"}


BENCH_SCENARIOS: list[Scenario] = [
    Scenario("conversation", _conversation, expect=_expect_conversation),
    Scenario("enqueue_three", _enqueue_three, expect=_expect_enqueue_three),
    Scenario("two_threads", _two_threads, expect=_expect_two_threads),
    Scenario("multitask_interrupt", _interrupt_then_enqueue, expect=_expect_interrupt_strategy),
]

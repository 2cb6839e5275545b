"""The scenarios the crash-point harness replays.

Each is a client script against the API (a careful client: after a failed request it checks,
then retries only what did not happen) followed by recovery until the system is quiescent.
``SCENARIOS`` are what ``make test`` replays at every call: the ``support`` graph for one run
and for an interrupt and its resume; small test graphs (``tests/crashpoints/graphs.py``) for
parallel branches and for the multi-run scenarios, whose crash points are in the run
lifecycle (enqueue, rollback, cancel), not in the graph; and for the two paths that have
AWS calls of their own, a step deferred by the model rate limit (its claim given up, a
delayed step message) and a run input kept in the payload bucket (PutObject at the run's
creation, GetObject in the worker). ``BENCH_SCENARIOS`` are the bigger
ones ``python -m bench crashpoints`` adds: the same lifecycles with ``support`` runs, and
longer scripts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from tests.crashpoints.graphs import FANOUT_ID, FANOUT_JOIN_ID, MODEL_ID, PAIR_ID, SINGLE_ID
from tests.crashpoints.harness import Call, Replay, Scenario


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


def _notes(outcome: dict[str, Any], thread_id: str = T) -> list[str]:
    return list((outcome[thread_id]["state"]["values"] or {}).get("notes", []))


# --- support: classifier -> specialist -> finalize ------------------------------------------


def _support(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", input=BILLING)


def _expect_support(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success"}, _runs(outcome)
    assert outcome[T]["status"] == "idle"
    assert len(_ai_texts(outcome)) == 1


SUPPORT = Scenario("support", _support, expect=_expect_support, description="one support run")


# --- parallel branches ---------------------------------------------------------------------


def _fanout(graph: str) -> Callable[[Replay], None]:
    def script(r: Replay) -> None:
        r.create_thread(T)
        r.create_run(T, "r1", assistant_id=graph, input={"topic": "x"})

    return script


def _expect_fanout(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success"}, _runs(outcome)
    assert sorted(_notes(outcome)) == ["left", "right", "split x"], _notes(outcome)


FANOUT = Scenario(
    "parallel",
    _fanout(FANOUT_ID),
    expect=_expect_fanout,
    description="split, then two branches in one superstep",
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
    description="a support run stops at interrupt(); a second run resumes it",
)


# --- two runs enqueued on one thread --------------------------------------------------------


def _enqueue(graph: str, inputs: list[dict[str, Any]]) -> Callable[[Replay], None]:
    def script(r: Replay) -> None:
        r.create_thread(T)
        for i, value in enumerate(inputs, start=1):
            body: dict[str, Any] = {"assistant_id": graph, "input": value}
            if i > 1:
                body["multitask_strategy"] = "enqueue"
            r.create_run(T, f"r{i}", **body)

    return script


def _expect_all_succeed(count: int) -> Callable[[dict[str, Any]], None]:
    def expect(outcome: dict[str, Any]) -> None:
        assert _runs(outcome) == {f"r{i}": "success" for i in range(1, count + 1)}, _runs(outcome)
        assert outcome[T]["status"] == "idle"

    return expect


ENQUEUE = Scenario(
    "enqueue",
    _enqueue(SINGLE_ID, [{"topic": "a"}, {"topic": "b"}]),
    expect=_expect_all_succeed(2),
    description="a second run enqueued behind a first (one-step graph)",
)


# --- rollback of a run mid-way ---------------------------------------------------------------


def _rollback(graph: str, earlier: dict[str, Any], as_node: str, first: Any, second: Any) -> Any:
    def setup(r: Replay) -> None:
        # The thread has state before the rolled-back run: the rollback must return to it.
        r.create_thread(T, metadata={"graph_id": graph})
        r.update_state(T, values=earlier, as_node=as_node)

    def script(r: Replay) -> None:
        r.create_run(T, "r1", assistant_id=graph, input=first)
        r.settle(until=r.sent("r1", 2))  # r1 is mid-way: its first step is done
        r.create_run(T, "r2", assistant_id=graph, input=second, multitask_strategy="rollback")

    return setup, script


def _expect_rollback_pair(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r2": "success"}, _runs(outcome)
    assert outcome[T]["status"] == "idle"
    assert _notes(outcome) == ["earlier", "first b", "second b"], _notes(outcome)


_setup, _script = _rollback(
    PAIR_ID, {"topic": "z", "notes": ["earlier"]}, "second", {"topic": "a"}, {"topic": "b"}
)
ROLLBACK = Scenario(
    "rollback",
    _script,
    setup=_setup,
    expect=_expect_rollback_pair,
    description="a run on a thread with history is rolled back after its first step",
)


# --- cancel of a run whose step is stuck -----------------------------------------------------


def _cancel_stuck(graph: str, value: dict[str, Any]) -> Callable[[Replay], None]:
    def script(r: Replay) -> None:
        r.create_thread(T)
        r.create_run(T, "r1", assistant_id=graph, input=value)
        r.stick("r1", 2, after_calls=1)  # the worker of step 2 dies right after its claim
        r.settle(until=r.stuck_fired("r1", 2))
        r.cancel("r1")

    return script


def _expect_cancelled(next_nodes: list[str]) -> Callable[[dict[str, Any]], None]:
    def expect(outcome: dict[str, Any]) -> None:
        assert _runs(outcome) == {"r1": "interrupted"}, _runs(outcome)
        assert outcome[T]["status"] == "idle"
        assert outcome[T]["state"]["next"] == next_nodes

    return expect


CANCEL_STUCK = Scenario(
    "cancel_stuck",
    _cancel_stuck(PAIR_ID, {"topic": "a"}),
    expect=_expect_cancelled(["second"]),
    description="a run whose step-2 worker died after claiming it is cancelled",
)


def _made(calls: list[Call], service: str, operation: str, frame: str) -> list[Call]:
    return [
        c for c in calls if (c.service, c.operation) == (service, operation) and frame in c.code
    ]


# --- a step deferred by the model rate limit ------------------------------------------------

# One call of the offline model at a time, 6 a minute: the second step's call finds no
# capacity and the step is re-queued with a delay (functions/models/limits.py).
ONE_CALL_AT_A_TIME = {"model_limits": json.dumps({"offline": {"rpm": 6, "burst": 1}})}


def _deferred(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", assistant_id=MODEL_ID, input={"topic": "limits"})


def _expect_two_model_steps(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success"}, _runs(outcome)
    notes = _notes(outcome)
    assert [n.split(":", 1)[0] for n in notes] == ["ask", "answer"], notes


def _expect_a_deferral(calls: list[Call]) -> None:
    deferred = _made(calls, "dynamodb", "UpdateItem", "store.defer_step")
    assert len(deferred) == 1, "the second step was not deferred by the model limit"
    resent = [c for c in calls[deferred[0].index :] if c.name == "sqs:SendMessage"]
    assert resent, "no step message followed the deferral"
    assert "steps._defer" in resent[0].code, "the deferral sent no delayed step message"


DEFERRED = Scenario(
    "deferred",
    _deferred,
    expect=_expect_two_model_steps,
    settings=ONE_CALL_AT_A_TIME,
    expect_calls=_expect_a_deferral,
    description="a step deferred by the model rate limit, re-queued with a delay",
)


# --- a run input kept in the payload bucket -------------------------------------------------

# Over INLINE_MAX_BYTES (64 KB) of JSON, deterministic, and small enough compressed that the
# checkpoints holding it stay DynamoDB items: only the run's input goes to the bucket.
LARGE_TOPIC = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(1100))


def _large_input(r: Replay) -> None:
    r.create_thread(T)
    r.create_run(T, "r1", assistant_id=SINGLE_ID, input={"topic": LARGE_TOPIC})


def _expect_large_input(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r1": "success"}, _runs(outcome)
    assert _notes(outcome) == [f"only {LARGE_TOPIC}"], "the large input did not reach the graph"


def _expect_input_in_the_bucket(calls: list[Call]) -> None:
    assert _made(calls, "s3", "PutObject", "run_payloads.offload"), "input not put in the bucket"
    assert _made(calls, "s3", "GetObject", "run_payloads"), "the worker did not read it back"


LARGE_INPUT = Scenario(
    "large_input",
    _large_input,
    expect=_expect_large_input,
    payload_bucket=True,
    expect_calls=_expect_input_in_the_bucket,
    description="a run whose input (over 64 KB) is kept in the payload bucket",
)

SCENARIOS: list[Scenario] = [
    SUPPORT,
    FANOUT,
    INTERRUPT,
    ENQUEUE,
    ROLLBACK,
    CANCEL_STUCK,
    DEFERRED,
    LARGE_INPUT,
]


# --- bigger ones, for the benchmark sweep ----------------------------------------------------


def _conversation(r: Replay) -> None:
    r.create_thread(T)
    for i, text in enumerate((BILLING, TECHNICAL, GENERAL), start=1):
        r.create_run(T, f"r{i}", input=text)
        r.settle()


def _expect_conversation(outcome: dict[str, Any]) -> None:
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


EARLIER = {
    "messages": [
        {"role": "user", "content": "I was charged twice on my invoice"},
        {"role": "assistant", "content": "Refunded."},
    ],
    "route": "billing:done",
}


def _expect_rollback_support(outcome: dict[str, Any]) -> None:
    assert _runs(outcome) == {"r2": "success"}, _runs(outcome)
    texts = _ai_texts(outcome)
    assert texts[0] == "Refunded.", texts
    assert len(texts) == 2, texts
    assert texts[1].startswith("Thanks"), texts


_support_setup, _support_rollback = _rollback("support", EARLIER, "finalize", TECHNICAL, GENERAL)

BENCH_SCENARIOS: list[Scenario] = [
    Scenario("parallel_join", _fanout(FANOUT_JOIN_ID), expect=_expect_fanout),
    Scenario(
        "enqueue_support",
        _enqueue("support", [BILLING, TECHNICAL]),
        expect=_expect_all_succeed(2),
    ),
    Scenario(
        "rollback_support",
        _support_rollback,
        setup=_support_setup,
        expect=_expect_rollback_support,
    ),
    Scenario(
        "cancel_stuck_support",
        _cancel_stuck("support", BILLING),
        expect=_expect_cancelled(["billing"]),
    ),
    Scenario("conversation", _conversation, expect=_expect_conversation),
    Scenario(
        "enqueue_three",
        _enqueue("support", [BILLING, TECHNICAL, GENERAL]),
        expect=_expect_all_succeed(3),
    ),
    Scenario("two_threads", _two_threads, expect=_expect_two_threads),
    Scenario("multitask_interrupt", _interrupt_then_enqueue, expect=_expect_interrupt_strategy),
]

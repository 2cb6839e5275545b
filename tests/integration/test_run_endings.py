"""Regression tests for the crash points of the run path: each fails on the engine before
the run ending became one durable, resumable sequence (see functions/runs.py).

Time is simulated where deployed timings matter (``functions.clock``): a lease of 360 s and
a housekeeping pass every 5 minutes are advanced, not slept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from functions import aws, clock
from functions.checkpointer import make_checkpointer
from functions.executor import run_superstep, thread_config
from functions.graph_loader import load_graph
from functions.steps import budget_steps_message, recursion_error_message
from functions.store import Ending
from graphs import registry
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

BILLING = {"messages": [{"role": "user", "content": "I want a refund"}]}
CANCEL = {"messages": [{"role": "user", "content": "Please cancel my account"}]}


class FakeClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(clock, "now", fake.now)
    return fake


class FailAws:
    """Make the next matching AWS call(s) fail, as a throttled or unreachable AWS would."""

    def __init__(self) -> None:
        self.rules: list[list[Any]] = []
        self._registered: list[Any] = []

    def fail(
        self, operation: str, times: int = 1, when: Callable[[dict[str, Any]], bool] | None = None
    ) -> None:
        """Fail the next ``times`` calls of ``operation`` (whose parameters match ``when``)."""
        self.rules.append([operation, times, when or (lambda _params: True)])

    def _before_call(self, params: dict[str, Any], event_name: str, **_kwargs: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        for rule in self.rules:
            if rule[0] == operation and rule[1] > 0 and rule[2](params):
                rule[1] -= 1
                from botocore.exceptions import EndpointConnectionError

                raise EndpointConnectionError(endpoint_url=f"injected:{operation}")

    def attach(self, *clients: Any) -> None:
        for client in (aws.sqs_client(), aws.dynamodb_resource().meta.client, *clients):
            client.meta.events.register("provide-client-params.*.*", self._before_call)
            self._registered.append(client)

    def detach(self) -> None:
        for client in self._registered:
            client.meta.events.unregister("provide-client-params.*.*", self._before_call)


@pytest.fixture
def fail_aws(stack: Stack) -> Iterator[FailAws]:
    injector = FailAws()
    injector.attach(make_checkpointer(stack.settings).client)
    yield injector
    injector.detach()


def _run(stack: Stack, thread_id: str, run_id: str) -> dict[str, Any]:
    return dict(stack.api("GET", f"/threads/{thread_id}/runs/{run_id}").body)


def _thread(stack: Stack, thread_id: str) -> dict[str, Any]:
    return dict(stack.api("GET", f"/threads/{thread_id}").body)


def _messages(stack: Stack, thread_id: str) -> list[str]:
    values = stack.api("GET", f"/threads/{thread_id}/state").body["values"]
    return [m["content"] for m in values.get("messages", [])]


def _deliver_one(stack: Stack) -> dict[str, Any]:
    priority, message = stack.receive(1)[0]
    stack.deliver(priority, [message])
    return message


def _finished_thread(stack: Stack) -> tuple[str, list[str]]:
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    stack.pump()
    return thread_id, _messages(stack, thread_id)


# --- 1. rollback only removes what the rolled-back run wrote ------------------------------


def test_rollback_of_a_recovered_first_step_keeps_earlier_runs(stack: Stack) -> None:
    # GIVEN a thread with a finished conversation
    thread_id, before = _finished_thread(stack)
    # AND a second run whose first step wrote its checkpoint, then its worker died before
    # recording it (the redelivered message recovers the step without re-running it)
    second = stack.start_run(thread_id, input=BILLING)
    priority, message = stack.receive(1)[0]
    stack.store.claim_step(thread_id, second["run_id"], 1, time.time() - 1, "dead-worker")
    graph = load_graph("support", stack.settings)
    config = thread_config(thread_id)
    config["metadata"] = {"run_id": second["run_id"]}
    run_superstep(graph, BILLING, config)
    stack.deliver(priority, [message])
    assert _run(stack, thread_id, second["run_id"])["status"] == "running"

    # WHEN a third run rolls the second one back
    third = stack.start_run(thread_id, input=CANCEL, multitask_strategy="rollback")
    stack.pump()

    # THEN the earlier conversation is intact: only the second run's checkpoints went
    assert stack.api("GET", f"/threads/{thread_id}/runs/{second['run_id']}").status == 404
    assert _run(stack, thread_id, third["run_id"])["status"] == "success"
    after = _messages(stack, thread_id)
    assert after[: len(before)] == before
    assert "I want a refund" not in after[len(before) :]


def _history(stack: Stack, thread_id: str) -> list[tuple[int, str]]:
    history = stack.api("POST", f"/threads/{thread_id}/history", {"limit": 100}).body
    return [(h["metadata"]["step"], h["metadata"]["source"]) for h in reversed(history)]


# The run's checkpoint writes: the first step's input checkpoint, ``__start__``'s writes, the
# checkpoint after them, the first node's writes and its checkpoint; then two per step.
@pytest.mark.parametrize("write", range(1, 10))
def test_a_step_that_failed_at_any_checkpoint_write_is_finished_by_its_retry(
    stack: Stack, fail_aws: FailAws, write: int
) -> None:
    # GIVEN the fault-free outcome of a run on a fresh thread
    reference_thread, reference = _finished_thread(stack)
    reference_history = _history(stack, reference_thread)

    # WHEN the run's ``write``-th checkpoint write fails (whatever was written before it
    # stays), and the step is retried
    seen = {"n": 0}

    def nth_checkpoint_write(params: dict[str, Any]) -> bool:
        if params.get("TableName") != stack.settings.checkpoint_table:
            return False
        seen["n"] += 1
        return seen["n"] == write

    fail_aws.fail("PutItem", when=nth_checkpoint_write)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    stack.pump()

    # THEN the run ends as the fault-free one did: same reply, same checkpoints
    assert seen["n"] >= write
    assert _run(stack, thread_id, run["run_id"])["status"] == "success"
    assert _messages(stack, thread_id) == reference
    assert _history(stack, thread_id) == reference_history


def test_repeating_a_rollback_changes_nothing(stack: Stack) -> None:
    # GIVEN a thread with a finished run and a second run, cancelled with rollback, whose
    # rollback effect ran once already
    thread_id, before = _finished_thread(stack)
    second = stack.start_run(thread_id, input=BILLING)
    _deliver_one(stack)
    record = stack.store.get_run(thread_id, second["run_id"])
    assert record is not None
    record.cancel = "rollback"
    stack.runs._roll_back(record)
    history = stack.api("POST", f"/threads/{thread_id}/history", {"limit": 100}).body

    # WHEN it runs again (an ending finished by someone else after a crash)
    stack.runs._roll_back(record)

    # THEN no further checkpoint was written and the state is the one before the run
    assert stack.api("POST", f"/threads/{thread_id}/history", {"limit": 100}).body == history
    assert _messages(stack, thread_id) == before


# --- 2. no thread deadlocks -----------------------------------------------------------------


def test_queued_run_whose_first_message_was_lost_at_handover_is_started_by_housekeeping(
    stack: Stack, fail_aws: FailAws, fake_clock: FakeClock
) -> None:
    # GIVEN a run queued behind another, and the handover's step message is lost
    thread_id = stack.create_thread()
    first = stack.start_run(thread_id, input=BILLING)
    second = stack.start_run(thread_id, input=BILLING)
    for _ in range(2):
        _deliver_one(stack)
    fail_aws.fail("SendMessage", times=1)
    _deliver_one(stack)  # the first run's last step: it ends and hands the thread over
    assert _run(stack, thread_id, first["run_id"])["status"] == "success"
    assert stack.receive(1) == []

    # WHEN housekeeping runs after the deadline
    fake_clock.advance(stack.settings.lease_s + 1)
    assert stack.housekeeping() == {"requeued": 1}
    stack.pump()

    # THEN the second run ran; nothing holds the thread
    assert _run(stack, thread_id, second["run_id"])["status"] == "success"
    thread = stack.store.get_thread(thread_id)
    assert thread is not None
    assert thread.active_run_id is None
    assert thread.queued_runs == 0


def test_creating_a_run_twice_after_a_lost_answer_is_not_a_conflict(stack: Stack) -> None:
    # GIVEN a run stored by a request whose answer was lost
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    record = stack.store.get_run(thread_id, run["run_id"])
    assert record is not None

    # WHEN the same transaction is sent again (botocore retries it)
    again = stack.store.create_run(record)

    # THEN it counts as done: the run does not queue behind itself
    assert again is True
    thread = stack.store.get_thread(thread_id)
    assert thread is not None
    assert thread.active_run_id == run["run_id"]
    assert thread.queued_runs == 0


# --- 3. an ending that fails halfway is finished -------------------------------------------


def test_redelivered_message_finishes_an_ending_that_stopped_halfway(
    stack: Stack, fail_aws: FailAws
) -> None:
    # GIVEN a run that stops at interrupt(), with another run queued behind it (so its ending
    # has several effects), whose worker failed right after recording the outcome (the
    # thread release failed)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=CANCEL)
    queued = stack.start_run(thread_id, input=CANCEL)
    _deliver_one(stack)
    priority, last = stack.receive(1)[0]

    def releases_thread(params: dict[str, Any]) -> bool:
        key = params.get("Key", {}).get("sk")
        sk = key.get("S") if isinstance(key, dict) else key
        return sk == "THREAD" and "REMOVE active_run_id" in params.get("UpdateExpression", "")

    # every botocore attempt of the thread release fails
    fail_aws.fail("UpdateItem", times=3, when=releases_thread)
    stack.deliver(priority, [last])
    assert _run(stack, thread_id, run["run_id"])["status"] == "success"
    assert _thread(stack, thread_id)["status"] == "busy"

    # WHEN SQS redelivers the message
    stack.pump()

    # THEN the ending was finished: the queued run started and ran, the thread is
    # interrupted with its interrupt, and free
    assert _run(stack, thread_id, queued["run_id"])["status"] == "success"
    thread = _thread(stack, thread_id)
    assert thread["status"] == "interrupted"
    assert thread["interrupts"]
    record = stack.store.get_run(thread_id, run["run_id"])
    assert record is not None
    assert record.ending is None
    assert stack.store.get_thread(thread_id).active_run_id is None  # type: ignore[union-attr]


def test_cancel_with_a_stale_queued_record_does_not_leave_the_thread_held(stack: Stack) -> None:
    # GIVEN a queued run, read while queued, that is then started
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    second = stack.start_run(thread_id, input=BILLING)
    stale = stack.store.get_run(thread_id, second["run_id"])
    assert stale is not None
    assert stale.queued
    stack.pump()  # both runs complete ... but re-run the second to cancel it mid-way
    third = stack.start_run(thread_id, input=BILLING)
    fourth = stack.start_run(thread_id, input=BILLING)
    stale = stack.store.get_run(thread_id, fourth["run_id"])
    assert stale is not None
    assert stale.queued
    for _ in range(3):
        _deliver_one(stack)  # the third run ends and hands the thread to the fourth
    assert _run(stack, thread_id, third["run_id"])["status"] == "success"

    # WHEN the fourth is cancelled from the stale (queued) record
    stack.runs.cancel_active(stale, "interrupt")
    stack.pump()

    # THEN it ended interrupted and the thread is free
    assert _run(stack, thread_id, fourth["run_id"])["status"] == "interrupted"
    thread = stack.store.get_thread(thread_id)
    assert thread is not None
    assert thread.active_run_id is None
    assert thread.status == "idle"


# --- 4. retries and steps are bounded --------------------------------------------------------


def test_a_step_that_keeps_dying_ends_the_run_after_the_attempt_limit(
    stack: Stack, fake_clock: FakeClock
) -> None:
    # GIVEN a run whose step 1 kills its worker every time (Lambda timeout, out of memory):
    # each delivery claims the step and the invocation dies
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    limit = stack.settings.max_step_attempts
    sent = 1
    for _ in range(limit):
        priority, message = stack.receive(1)[0]
        stack.sqs.delete_message(
            QueueUrl=stack.queue_urls[priority], ReceiptHandle=message["ReceiptHandle"]
        )
        claim = stack.store.claim_step(
            thread_id, run["run_id"], 1, clock.now() + stack.settings.lease_s, "dying"
        )
        assert claim.claimed
        # WHEN the lease expires and housekeeping re-sends the step
        fake_clock.advance(stack.settings.lease_s + 1)
        sent += stack.housekeeping()["requeued"]
    stack.pump()

    # THEN the run ended error, saying which step failed how often and why; no re-sends
    got = _run(stack, thread_id, run["run_id"])
    assert got["status"] == "error"
    assert f"Step 1 of run {run['run_id']} failed {limit} times" in got["error"]
    assert "the invocation died" in got["error"]
    assert _thread(stack, thread_id)["status"] == "error"
    fake_clock.advance(3600)
    assert stack.housekeeping() == {"requeued": 0}
    assert sent == limit + 1


class _Loop(TypedDict, total=False):
    n: int


def _loop_factory(checkpointer: Any, _model: Any) -> Any:
    def tick(state: _Loop) -> dict[str, int]:
        return {"n": state.get("n", 0) + 1}

    builder = StateGraph(_Loop)
    builder.add_node("tick", tick)
    builder.add_edge(START, "tick")
    builder.add_conditional_edges("tick", lambda s: "tick" if s.get("n", 0) < 1000 else END)
    return builder.compile(checkpointer=checkpointer)


def test_recursion_limit_holds_across_invocations(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a cyclic graph, and what LangGraph does with it in one process
    monkeypatch.setitem(registry.GRAPHS, "loop", _loop_factory)
    reference = _loop_factory(InMemorySaver(), None)
    config: Any = {"configurable": {"thread_id": "ref"}, "recursion_limit": 5}
    with pytest.raises(GraphRecursionError) as raised:
        reference.invoke({"n": 0}, config)
    steps_in_process = reference.get_state(config).values["n"]

    # WHEN a run of it is given recursion_limit=5, one superstep per invocation
    thread_id = stack.create_thread()
    run = stack.start_run(
        thread_id, assistant_id="loop", input={"n": 0}, config={"recursion_limit": 5}
    )
    stack.pump()

    # THEN it ran the same number of supersteps and ended error with LangGraph's message
    got = _run(stack, thread_id, run["run_id"])
    assert got["status"] == "error"
    assert got["error"] == str(raised.value) == recursion_error_message(5)
    values = stack.api("GET", f"/threads/{thread_id}/state").body["values"]
    assert values["n"] == steps_in_process == 5
    joined = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}/join").body
    assert joined["__error__"]["error"] == "GraphRecursionError"


def test_a_run_of_a_graph_removed_by_a_redeploy_ends_at_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a run of a graph that a redeploy then removed
    monkeypatch.setitem(registry.GRAPHS, "gone", _loop_factory)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="gone", input={"n": 0})
    monkeypatch.delitem(registry.GRAPHS, "gone")

    # WHEN its step message is delivered
    delivered = stack.pump()

    # THEN the run ended error on that one delivery, naming the graph
    assert delivered == 1
    got = _run(stack, thread_id, run["run_id"])
    assert got["status"] == "error"
    assert "'gone'" in got["error"]


# --- 5. claims have owners; long steps keep their lease -------------------------------------


def test_a_worker_overtaken_after_its_lease_cannot_complete_the_step(stack: Stack) -> None:
    # GIVEN worker A claimed step 1, its lease expired, and worker B took the step over
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    assert stack.store.claim_step(thread_id, run["run_id"], 1, time.time() - 1, "a").claimed
    assert stack.store.claim_step(thread_id, run["run_id"], 1, time.time() + 300, "b").claimed

    # WHEN A tries to record the step and to end the run
    done, _ = stack.store.complete_step(
        thread_id,
        run["run_id"],
        1,
        token="a",
        checkpoint_id=None,
        start_checkpoint_id=None,
        first_step=True,
        deadline=time.time() + 60,
    )
    record = stack.store.get_run(thread_id, run["run_id"])
    assert record is not None
    ended = stack.runs.end(record, status="success", thread_status="idle", token="a")

    # THEN neither happened: the step belongs to B
    assert not done
    assert not ended
    assert _run(stack, thread_id, run["run_id"])["status"] == "running"


def _slow_factory(seen: dict[str, float], stack: Stack) -> registry.GraphFactory:
    def factory(checkpointer: Any, _model: Any) -> Any:
        def slow(state: _Loop) -> dict[str, int]:
            run_id = seen["run_id_holder"]
            thread_id = seen["thread_id_holder"]
            before = stack.store.get_run(thread_id, run_id).lease_until  # type: ignore[arg-type,union-attr]
            time.sleep(0.4)
            after = stack.store.get_run(thread_id, run_id).lease_until  # type: ignore[arg-type,union-attr]
            seen["before"], seen["after"] = float(before or 0), float(after or 0)
            return {"n": 1}

        builder = StateGraph(_Loop)
        builder.add_node("slow", slow)
        builder.add_edge(START, "slow")
        builder.add_edge("slow", END)
        return builder.compile(checkpointer=checkpointer)

    return factory


def test_a_long_step_renews_its_lease_while_its_node_runs(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a worker whose heartbeat beats every 0.1 s and a node that runs for 0.4 s
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    stack = Stack(moto_endpoint, heartbeat_s=0.1)
    seen: dict[str, Any] = {}
    monkeypatch.setitem(registry.GRAPHS, "slow", _slow_factory(seen, stack))
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="slow", input={"n": 0})
    seen["run_id_holder"], seen["thread_id_holder"] = run["run_id"], thread_id

    # WHEN the step runs
    stack.pump()

    # THEN the lease was pushed forward while the node ran, and the run completed
    assert seen["after"] > seen["before"]
    assert _run(stack, thread_id, run["run_id"])["status"] == "success"


# --- 6. retention follows activity ------------------------------------------------------------


def test_records_ttl_moves_with_updates_and_reads_ignore_expired_records(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, fake_clock: FakeClock
) -> None:
    # GIVEN retention of one day, and a thread created now
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    stack = Stack(moto_endpoint, ttl_days=1)
    thread_id = stack.create_thread()

    # WHEN it is used again 20 hours later
    fake_clock.advance(20 * 3600)
    run = stack.start_run(thread_id, input=BILLING)
    stack.pump()

    # THEN 20 more hours later (40 h after creation) it is still there, with its run
    fake_clock.advance(20 * 3600)
    assert _thread(stack, thread_id)["status"] == "idle"
    assert _run(stack, thread_id, run["run_id"])["status"] == "success"
    # AND past its TTL it reads as gone, though DynamoDB has not removed it yet
    fake_clock.advance(5 * 3600)
    assert stack.api("GET", f"/threads/{thread_id}").status == 404


# --- 8. a crashed step is recovered within the lease, not the visibility timeout ---------------


def test_housekeeping_resend_of_a_crashed_step_is_claimed_not_dropped(
    stack: Stack, fake_clock: FakeClock
) -> None:
    # GIVEN a worker that claimed step 1 and died (its message is still invisible in SQS)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    priority, message = stack.receive(1)[0]
    stack.store.claim_step(
        thread_id, run["run_id"], 1, clock.now() + stack.settings.lease_s, "dead-worker"
    )

    # WHEN the lease expires and housekeeping runs (long before the visibility timeout)
    fake_clock.advance(stack.settings.lease_s + 1)
    assert stack.housekeeping() == {"requeued": 1}
    stack.pump()

    # THEN the re-sent message ran the step and the run completed
    assert _run(stack, thread_id, run["run_id"])["status"] == "success"
    # AND when the original message comes back much later it changes nothing
    stack.sqs.change_message_visibility(
        QueueUrl=stack.queue_urls[priority],
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    stack.pump()
    assert len([m for m in _messages(stack, thread_id)]) == 2


def test_cancel_of_a_run_whose_step_is_stuck_ends_it(stack: Stack, fake_clock: FakeClock) -> None:
    # GIVEN a run whose worker died holding step 1 (live lease)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    stack.store.claim_step(
        thread_id, run["run_id"], 1, clock.now() + stack.settings.lease_s, "dead-worker"
    )

    # WHEN the run is cancelled and housekeeping runs once the lease expired
    assert stack.api("POST", f"/threads/{thread_id}/runs/{run['run_id']}/cancel").status == 202
    fake_clock.advance(stack.settings.lease_s + 1)
    stack.housekeeping()

    # THEN it ended interrupted and the thread is free
    assert _run(stack, thread_id, run["run_id"])["status"] == "interrupted"
    thread = stack.store.get_thread(thread_id)
    assert thread is not None
    assert thread.active_run_id is None


# --- 9. lesser ----------------------------------------------------------------------------


def test_housekeeping_does_not_duplicate_a_next_step_waiting_in_a_backlog(
    stack: Stack, fake_clock: FakeClock
) -> None:
    # GIVEN a run whose next step message waits in a backlog longer than the lease
    thread_id = stack.create_thread()
    stack.start_run(thread_id, input=BILLING)
    _deliver_one(stack)
    fake_clock.advance(stack.settings.lease_s * 2)

    # WHEN housekeeping runs
    result = stack.housekeeping()

    # THEN it sends nothing: the message is durable in SQS
    assert result == {"requeued": 0}
    assert len(stack.receive(10)) == 1


def _waiting(stack: Stack) -> int:
    return sum(
        int(
            stack.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
        )
        for url in stack.queue_urls.values()
    )


def test_a_step_waiting_in_a_long_backlog_is_re_sent_a_few_times_and_still_runs(
    stack: Stack, fake_clock: FakeClock
) -> None:
    # GIVEN a run whose next step waits unclaimed in a backlog for 10 hours, housekeeping
    # passing every 5 minutes (re-sends are not attempts: the step never ran)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    _deliver_one(stack)
    for _ in range(10 * 12):
        fake_clock.advance(300)
        stack.housekeeping()

    # THEN it was re-sent a few times, not once a pass, each wait twice the one before
    # (capped at an hour): 0.5 h, 1 h, 1 h, ... over 10 h
    copies = _waiting(stack)
    assert 2 <= copies <= 12, copies
    # AND when the backlog drains the step runs once and the run succeeds
    stack.pump()
    assert _run(stack, thread_id, run["run_id"])["status"] == "success"
    assert len(_messages(stack, thread_id)) == 2


def test_a_run_whose_step_messages_keep_vanishing_ends_error(
    stack: Stack, fake_clock: FakeClock
) -> None:
    # GIVEN a run whose step messages are lost every time (never claimed)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    for _ in range(40):
        for priority, message in stack.receive(10):
            stack.sqs.delete_message(
                QueueUrl=stack.queue_urls[priority], ReceiptHandle=message["ReceiptHandle"]
            )
        fake_clock.advance(3600)
        stack.housekeeping()
        if _run(stack, thread_id, run["run_id"])["status"] != "pending":
            break

    # THEN after max_step_resends re-sends it ends error, saying so, and the thread is free
    ended = _run(stack, thread_id, run["run_id"])
    assert ended["status"] == "error"
    assert f"re-sent {stack.settings.max_step_resends} times" in ended["error"]
    assert _thread(stack, thread_id)["status"] == "error"


def test_a_run_created_while_a_state_update_holds_the_thread_waits_for_it(
    stack: Stack, fake_clock: FakeClock
) -> None:
    # GIVEN a state update holding the thread (its process died while writing)
    thread_id = stack.create_thread()
    assert stack.store.acquire_for_update(thread_id, "update_state:x", 60)

    # WHEN a run is created, and housekeeping runs after the hold's time
    run = stack.start_run(thread_id, input=BILLING)
    assert _run(stack, thread_id, run["run_id"])["status"] == "pending"
    assert stack.receive(1) == []
    fake_clock.advance(stack.settings.lease_s + 1)
    stack.housekeeping()
    stack.pump()

    # THEN the run started only after the hold ended, and completed
    assert _run(stack, thread_id, run["run_id"])["status"] == "success"


def test_update_state_while_a_run_holds_the_thread_is_a_conflict(stack: Stack) -> None:
    # GIVEN a run in progress
    thread_id, _ = _finished_thread(stack)
    stack.start_run(thread_id, input=BILLING)

    # WHEN the state is updated
    reply = stack.api(
        "POST", f"/threads/{thread_id}/state", {"values": {"route": "x"}, "as_node": "finalize"}
    )

    # THEN 409, and the run is unaffected
    assert reply.status == 409
    stack.pump()
    assert _thread(stack, thread_id)["status"] == "idle"


def _deleting_factory(stack: Stack, holder: dict[str, str]) -> registry.GraphFactory:
    def factory(checkpointer: Any, _model: Any) -> Any:
        def first(state: _Loop) -> dict[str, int]:
            return {"n": 1}

        def second(state: _Loop) -> dict[str, int]:
            # The thread is deleted through the API while this step runs.
            thread = threading.Thread(
                target=lambda: stack.api("DELETE", f"/threads/{holder['thread_id']}")
            )
            thread.start()
            thread.join()
            return {"n": 2}

        builder = StateGraph(_Loop)
        builder.add_node("first", first)
        builder.add_node("second", second)
        builder.add_edge(START, "first")
        builder.add_edge("first", "second")
        builder.add_edge("second", END)
        return builder.compile(checkpointer=checkpointer)

    return factory


def test_deleting_a_thread_mid_run_leaves_no_checkpoints_behind(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a run whose thread is deleted while its second step runs
    holder: dict[str, str] = {}
    monkeypatch.setitem(registry.GRAPHS, "deleting", _deleting_factory(stack, holder))
    thread_id = stack.create_thread()
    holder["thread_id"] = thread_id
    stack.start_run(thread_id, assistant_id="deleting", input={"n": 0})

    # WHEN the run's steps are delivered, then the thread id is used again
    stack.pump()
    stack.create_thread(thread_id=thread_id)

    # THEN the new thread starts empty: what the deleted run wrote did not come back
    state = stack.api("GET", f"/threads/{thread_id}/state").body
    assert "n" not in state["values"]
    assert state["checkpoint"] is None


def test_a_run_ending_records_the_outcome_with_what_remains_to_be_done(stack: Stack) -> None:
    # GIVEN an unclaimed run
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING)
    record = stack.store.get_run(thread_id, run["run_id"])
    assert record is not None

    # WHEN its ending is recorded but not yet done
    done, ended = stack.store.record_ending(
        record,
        "success",
        Ending(thread_status="idle", effects=["thread", "next"]),
        token=None,
        now=time.time(),
        recheck_at=time.time() + 60,
    )

    # THEN the record holds both, and stays where housekeeping looks
    assert done
    assert ended is not None
    assert ended.status == "success"
    assert ended.ending is not None
    assert ended.ending.effects == ["thread", "next"]
    assert ended.lease_until is not None


def test_housekeeping_pages_through_a_backlog_larger_than_one_page(
    stack: Stack, fake_clock: FakeClock
) -> None:
    # GIVEN 130 runs whose first step message was lost (more than one 100-item page)
    runs = []
    for _ in range(130):
        thread_id = stack.create_thread()
        runs.append((thread_id, stack.start_run(thread_id, input=BILLING)["run_id"]))
    stack.sqs.purge_queue(QueueUrl=stack.queue_urls["normal"])

    # WHEN one housekeeping pass runs after their deadline
    fake_clock.advance(stack.settings.lease_s + 1)
    result = stack.housekeeping()

    # THEN every one of them was re-sent, across the lease index's shards
    assert result == {"requeued": 130}
    assert stack.housekeeping() == {"requeued": 0}


def test_a_budget_of_steps_stops_the_run_and_leaves_the_thread_usable(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the cyclic graph (it would take 1,000 supersteps) and a run with budget max_steps=3
    monkeypatch.setitem(registry.GRAPHS, "loop", _loop_factory)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="loop", input={"n": 0}, budget={"max_steps": 3})

    # WHEN its steps are delivered
    stack.pump()

    # THEN it ended error after 3 supersteps, the error naming the budget and the figures
    got = _run(stack, thread_id, run["run_id"])
    assert got["status"] == "error"
    assert got["error"] == budget_steps_message(3)
    assert got["error"].startswith("budget max_steps=3 exceeded: 3 steps done")
    assert got["kwargs"]["budget"] == {"max_steps": 3}
    assert stack.api("GET", f"/threads/{thread_id}/state").body["values"]["n"] == 3

    # AND the thread takes the next run, which a deployment without a budget lets finish
    support_thread = stack.create_thread()
    text = {"messages": [{"role": "user", "content": "I was charged twice"}]}
    again = stack.start_run(thread_id, assistant_id="loop", input={"n": 995})
    ok = stack.start_run(support_thread, input=text, budget={"max_steps": 50})
    stack.pump()
    assert _run(stack, thread_id, again["run_id"])["status"] == "success"
    assert stack.api("GET", f"/threads/{thread_id}/state").body["values"]["n"] == 1000
    assert _run(stack, support_thread, ok["run_id"])["status"] == "success"


@pytest.mark.parametrize(
    "budget",
    [
        {"max_steps": 0},
        {"max_steps": "many"},
        {"max_tokens": -5},
        {"max_tokens": 1.5},
        {"max_cost_usd": 0},
        {"max_cost_usd": "lots"},
        {"max_steps": 3, "x": 1},
    ],
)
def test_an_invalid_budget_is_refused_with_422(stack: Stack, budget: dict[str, Any]) -> None:
    # GIVEN a thread WHEN a run asks for a budget that is invalid (or names an unknown limit)
    thread_id = stack.create_thread()
    reply = stack.api(
        "POST", f"/threads/{thread_id}/runs", {"assistant_id": "support", "budget": budget}
    )
    # THEN 422, and no run was started
    assert reply.status == 422, reply.body
    assert stack.api("GET", f"/threads/{thread_id}/runs").body == []

"""In-process SQS pollers standing in for the Lambda event source mappings.

One dispatcher thread receives from the step queues, always in priority order (``high``,
then ``normal``, then ``low``), and only when a worker is free, so a ``low`` backlog never
holds a message that ``high`` work could use. Each batch becomes a Lambda-shaped SQS event
for the real step worker handler, run on a small thread pool so several runs progress at
once.

Priority is strict, because the workers share one interpreter: a low step running beside a
high one slows it down, where on AWS each would have its own Lambda. So (1) no batch of a
queue starts while a batch of a higher queue is in flight (a run sends its next step
message before its batch finishes, so its steps stay back to back), and (2) one worker is
kept for the top queue, as its own ``MaximumConcurrency`` does on AWS: a ``high`` step never
waits for a ``low`` one to finish.

Each invocation runs on its own thread and is given the step worker's function timeout, as
on Lambda: one still running at the timeout is dead ("Task timed out after N seconds" is
logged, and ``infra.local.invocations`` keeps its thread from making further AWS calls). A
dead invocation — timed out, or crashed by fault injection — neither deletes nor releases its
messages: they come back after the queue's visibility timeout, as on AWS. With
``LAMBDAGRAPH_FAULTS=duplicate=p`` some messages are delivered twice (``infra.local.faults``).

Records the handler reports in ``batchItemFailures`` stay on the queue and come back after
a short visibility delay (on AWS they come back after the queue's visibility timeout, which
is minutes; locally a quick retry is more useful). After ``maxReceiveCount`` receives moto
moves a message to its dead-letter queue, exactly as SQS does.

To wake within milliseconds without hammering moto with empty receives, the dispatcher
peeks at the in-process moto backend (when moto runs in this process) and only issues a
``ReceiveMessage`` for a queue that has visible messages. Messages are still received,
deleted and retried through the SQS API over HTTP.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from infra.local.faults import FaultInjector
from infra.local.invocations import Invocation, InvocationTimedOut, Outcome, run_invocation
from infra.local.lambda_context import ACCOUNT_ID, LocalLambdaContext

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
Peek = Callable[[str], bool]


@dataclass(frozen=True)
class PolledQueue:
    """A queue the dispatcher reads; ``queues`` passed to ``QueuePollers`` are in priority order."""

    label: str
    name: str
    url: str
    arn: str
    batch_size: int = 1
    # Batches of this queue handled at once (the local counterpart of the ESM's
    # MaximumConcurrency); None = as many as there are workers.
    max_in_flight: int | None = None


def moto_peek(region: str, account_id: str = ACCOUNT_ID) -> Peek:
    """Whether a queue of the in-process moto server has visible messages (a wake-up hint)."""
    from moto.sqs.models import sqs_backends

    def has_visible(queue_name: str) -> bool:
        queue = sqs_backends[account_id][region].queues.get(queue_name)
        # An unknown queue answers "maybe", so the real ReceiveMessage reports the problem.
        return queue is None or bool(queue.messages)

    return has_visible


class QueuePollers:
    """Dispatches queue messages to ``handler`` on ``workers`` threads, higher queues first."""

    def __init__(
        self,
        queues: Sequence[PolledQueue],
        handler: Handler,
        *,
        sqs_client: Any,
        region: str,
        workers: int = 4,
        function_name: str = "lambdagraph-stepworker",
        timeout_s: float = 300.0,
        retry_delay_s: int | None = 1,
        peek: Peek | None = None,
        idle_sleep_s: float | None = None,
        reserved_for_top: int | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        if not queues:
            raise ValueError("QueuePollers needs at least one queue")
        if workers < 1:
            raise ValueError("QueuePollers needs at least one worker")
        reserved = reserved_for_top if reserved_for_top is not None else min(1, workers - 1)
        if not 0 <= reserved < workers:
            raise ValueError("reserved_for_top must leave at least one worker for the other queues")
        self._queues = tuple(queues)
        self._handler = handler
        self._sqs = sqs_client
        self._region = region
        self._workers = workers
        self._function_name = function_name
        self._timeout_s = timeout_s
        self._retry_delay_s = retry_delay_s
        self._peek = peek
        self._faults = faults
        # Threads delivering injected duplicates (joined on stop).
        self._copies: list[threading.Thread] = []
        self._reserved = reserved if len(queues) > 1 else 0
        # With a peek an idle check costs microseconds; without one it is three HTTP calls.
        self._idle_sleep_s = idle_sleep_s if idle_sleep_s is not None else (0.005 if peek else 0.05)
        self._free = threading.Semaphore(workers)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self._running = threading.Event()
        self._running.set()
        self._pool: ThreadPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None

    def start(self) -> None:
        if self._dispatcher is not None:
            raise RuntimeError("pollers already started")
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="step-worker")
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="sqs-dispatcher", daemon=True
        )
        self._dispatcher.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop receiving, then let the batches already handed to workers finish."""
        self._stopping.set()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout_s)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        with self._lock:
            copies, self._copies = self._copies, []
        for copy in copies:
            copy.join(timeout_s)

    def pause(self) -> None:
        """Receive nothing until ``resume()`` (batches already handed out finish)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            if not self._running.wait(0.1):
                continue
            if not self._free.acquire(timeout=0.1):
                continue
            try:
                batch = self._receive_next()
            except Exception:
                self._free.release()
                # The emulator is unreachable or shutting down; log it and keep trying.
                log.exception("receiving step messages failed")
                self._stopping.wait(1.0)
                continue
            if batch is None:
                self._free.release()
                self._stopping.wait(self._idle_sleep_s)
                continue
            assert self._pool is not None
            with self._lock:
                self._in_flight[batch[0].label] += 1
            self._pool.submit(self._run_batch, *batch)

    def _receive_next(self) -> tuple[PolledQueue, list[dict[str, Any]]] | None:
        """The next batch from the highest-priority queue that has one.

        Strict priority: no batch of a queue starts while a batch of a higher queue is in
        flight. All workers share one interpreter (and its lock), so a low step running
        beside a high one slows it down; and a run's next step message is sent before its
        batch finishes, so holding lower queues until then keeps a high run's steps
        back to back.
        """
        for index, queue in enumerate(self._queues):
            if index > 0 and self._below_top_in_flight() >= self._workers - self._reserved:
                # The reserved workers wait for the top queue, as its own concurrency does on AWS.
                return None
            with self._lock:
                at_cap = (
                    queue.max_in_flight is not None
                    and self._in_flight[queue.label] >= queue.max_in_flight
                )
            if not at_cap and (self._peek is None or self._peek(queue.name)):
                messages = self._receive(queue)
                if messages:
                    return queue, messages
            with self._lock:
                busy = self._in_flight[queue.label] > 0
            if busy:
                # This queue's runs are mid-step; their next messages go before lower queues.
                return None
        return None

    def _below_top_in_flight(self) -> int:
        with self._lock:
            return sum(self._in_flight[queue.label] for queue in self._queues[1:])

    def _receive(self, queue: PolledQueue) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=queue.url,
            MaxNumberOfMessages=queue.batch_size,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def _run_batch(self, queue: PolledQueue, messages: list[dict[str, Any]]) -> None:
        try:
            self._invoke(queue, messages)
        except Exception:
            # A pool thread must not die silently: report it, the messages come back anyway.
            log.exception("handling a %s batch failed", queue.label)
        finally:
            with self._lock:
                self._in_flight[queue.label] -= 1
            self._free.release()

    def _invoke(self, queue: PolledQueue, messages: list[dict[str, Any]]) -> None:
        now_copies, later_copies = self._duplicates(messages)
        if now_copies:
            # SQS delivered it twice at once: a second invocation runs beside this one.
            self._deliver_copy(queue, now_copies, delay_s=0.0)
        started = time.perf_counter()
        outcome = self._call(queue, messages)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if outcome.died:
            # As on Lambda: a dead invocation neither deletes nor releases its messages; they
            # come back when the queue's visibility timeout runs out.
            self._report_death(queue, messages, outcome)
        else:
            self._settle(queue, messages, outcome, elapsed_ms)
        if later_copies and self._faults is not None:
            self._deliver_copy(queue, later_copies, delay_s=self._faults.later_delay_s())

    def _call(self, queue: PolledQueue, messages: list[dict[str, Any]]) -> Outcome:
        """One step worker invocation on ``messages``, killed at the function timeout."""
        event = {"Records": [sqs_record(message, queue.arn, self._region) for message in messages]}
        context = LocalLambdaContext(self._function_name, self._timeout_s, region=self._region)
        invocation = Invocation(
            self._function_name,
            context.aws_request_id,
            context.deadline,
            faults=self._faults,
            crash_at=self._faults.plan_crash() if self._faults is not None else None,
        )
        outcome = run_invocation(
            self._handler,
            event,
            context,
            invocation,
            thread_name=f"{self._function_name}-{queue.label}-{context.aws_request_id[:8]}",
        )
        if isinstance(outcome.killed, InvocationTimedOut):
            # Lambda's own words, with the request id first as in its log stream.
            log.error(
                "%s Task timed out after %.2f seconds", context.aws_request_id, self._timeout_s
            )
        elif outcome.killed is not None:
            log.warning(
                "%s step worker died (%s); its %s batch comes back after the visibility timeout",
                context.aws_request_id,
                outcome.killed,
                queue.label,
            )
        elif self._faults is not None:
            self._faults.finished(invocation.calls)
        return outcome

    def _settle(
        self,
        queue: PolledQueue,
        messages: list[dict[str, Any]],
        outcome: Outcome,
        elapsed_ms: float,
    ) -> None:
        if outcome.error is not None:
            # As on Lambda: a handler that raises fails the whole batch.
            log.error(
                "step worker raised; the %s batch will be retried",
                queue.label,
                exc_info=outcome.error,
            )
            failed = {message["MessageId"] for message in messages}
        else:
            failed = failed_message_ids(outcome.result, messages)
        done = [message for message in messages if message["MessageId"] not in failed]
        retry = [message for message in messages if message["MessageId"] in failed]
        self._delete(queue, done)
        self._release_for_retry(queue, retry)
        for message in messages:
            # The step worker logs each step itself; a failure is worth a line of ours too.
            log.log(
                logging.WARNING if message in retry else logging.DEBUG,
                "%s message %s%s handled in %.0f ms%s",
                queue.label,
                message["MessageId"][:8],
                _describe(message.get("Body", "")),
                elapsed_ms,
                " -> failed, will be retried" if message in retry else "",
            )

    def _report_death(
        self, queue: PolledQueue, messages: list[dict[str, Any]], outcome: Outcome
    ) -> None:
        for message in messages:
            log.warning(
                "%s message %s%s left in flight: its invocation died",
                queue.label,
                message["MessageId"][:8],
                _describe(message.get("Body", "")),
            )

    # --- duplicates (LAMBDAGRAPH_FAULTS=duplicate=p) ---------------------------------------

    def _duplicates(
        self, messages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The messages to deliver a second time at once, and those to deliver again later."""
        if self._faults is None:
            return [], []
        now: list[dict[str, Any]] = []
        later: list[dict[str, Any]] = []
        for message in messages:
            when = self._faults.duplicate()
            if when == "now":
                now.append(message)
            elif when == "later":
                later.append(message)
        return now, later

    def _deliver_copy(
        self, queue: PolledQueue, messages: list[dict[str, Any]], *, delay_s: float
    ) -> None:
        """Deliver ``messages`` again in an invocation of their own, outside the worker share.

        A copy owns nothing on the queue: the first delivery deletes or releases the message,
        the copy's outcome is only logged (as a duplicate delivery's would be on AWS, where
        its delete finds the message gone).
        """

        def deliver() -> None:
            if delay_s and self._stopping.wait(delay_s):
                return
            if self._faults is not None:
                self._faults.count("duplicate", len(messages))
            log.info(
                "%s message %s%s delivered twice (injected duplicate%s)",
                queue.label,
                messages[0]["MessageId"][:8],
                _describe(messages[0].get("Body", "")),
                ", later" if delay_s else "",
            )
            outcome = self._call(queue, messages)
            if outcome.error is not None:
                log.warning("the duplicate delivery raised", exc_info=outcome.error)

        thread = threading.Thread(target=deliver, name=f"duplicate-{queue.label}", daemon=True)
        with self._lock:
            self._copies = [t for t in self._copies if t.is_alive()]
            self._copies.append(thread)
        thread.start()

    def _delete(self, queue: PolledQueue, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        response = self._sqs.delete_message_batch(
            QueueUrl=queue.url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
        for failure in response.get("Failed", []):
            log.warning("could not delete a %s message: %s", queue.label, failure)

    def _release_for_retry(self, queue: PolledQueue, messages: list[dict[str, Any]]) -> None:
        if self._retry_delay_s is None:
            # As Lambda does: a failed record comes back when its visibility (which the
            # handler may have set itself, as the webhook sender does) runs out.
            return
        for message in messages:
            self._sqs.change_message_visibility(
                QueueUrl=queue.url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=self._retry_delay_s,
            )


def failed_message_ids(result: Any, messages: Sequence[Mapping[str, Any]]) -> set[str]:
    """Message ids a handler reported in ``batchItemFailures`` (Lambda's partial batch response)."""
    if result is None:
        return set()
    if not isinstance(result, Mapping):
        raise TypeError(f"step worker returned {type(result).__name__}, expected a dict or None")
    known = {message["MessageId"] for message in messages}
    failed = {str(item["itemIdentifier"]) for item in result.get("batchItemFailures") or []}
    # Lambda fails the whole batch when an identifier is empty or unknown.
    return known if failed - known else failed


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of a Lambda SQS event, from a ``ReceiveMessage`` result."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    # Lambda spells SQS attributes in camelCase and base64-encodes binary values.
    attribute: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
    return attribute


def _describe(body: str) -> str:
    """`` run=... thread=...`` when the body is a JSON object naming them (for readable logs)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    parts = [
        f"{key.removesuffix('_id')}={payload[key]}"
        for key in ("run_id", "thread_id")
        if key in payload
    ]
    return (" " + " ".join(parts)) if parts else ""

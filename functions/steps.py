"""The step worker's engine: claim a step, run one superstep, decide what comes next.

Exactly-once in effect under at-least-once delivery:
- ``Store.claim_step`` is a conditional update on the run item: the previous step must be
  done and nobody may hold a live lease on this step. A duplicate message fails the claim
  and is dropped; a step whose worker died is claimed again once its lease expires.
- A retried step first checks whether the crashed attempt already got its checkpoint
  written (the thread head moved past the message's expected checkpoint, made by this run);
  if so it does not run the superstep again, it only decides what comes next.
- The next step message is sent only after the checkpointer returned (the checkpoint is
  durable) and the step is recorded done.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from functions import clock
from functions.errors import InfrastructureError
from functions.executor import StepResult, run_superstep, thread_config
from functions.graph_loader import load_graph
from functions.queues import StepMessage
from functions.runs import RunService
from functions.store import RunRecord

logger = Logger(child=True)
metrics = Metrics()

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    InfrastructureError,
    ClientError,
    BotoCoreError,
)


@dataclass
class Delivery:
    """What SQS told us about the message."""

    receive_count: int = 1
    sent_at_ms: int | None = None


class StepWorker:
    def __init__(self, runs: RunService) -> None:
        self.runs = runs
        self.settings = runs.settings
        self.store = runs.store

    def process(self, message: StepMessage, delivery: Delivery) -> str:
        """Handle one step message; returns what happened (for logs and tests).

        Raises on infrastructure errors so SQS redelivers the message; on the last
        delivery the run is first marked ``error`` so it never stays ``running``.
        """
        # Thread-local keys: the local stack runs several workers in one process.
        logger.thread_safe_append_keys(
            run_id=message.run_id,
            thread_id=message.thread_id,
            step=message.step,
            priority=message.priority,
        )
        if delivery.sent_at_ms:
            wait_ms = max(0.0, clock.now() * 1000 - delivery.sent_at_ms)
            metrics.add_metric(name="QueueWait", unit=MetricUnit.Milliseconds, value=wait_ms)
        try:
            return self._process(message)
        except INFRASTRUCTURE_ERRORS as exc:
            if delivery.receive_count >= self.settings.max_receive_count:
                self._give_up(message, exc)
            else:
                self._release(message, exc)
            raise

    def _release(self, message: StepMessage, exc: BaseException) -> None:
        """Let the redelivered message claim the step again without waiting for the lease."""
        logger.warning("infrastructure error; the message will be retried", exc_info=exc)
        try:
            self.store.release_claim(message.thread_id, message.run_id, message.step)
        except INFRASTRUCTURE_ERRORS:
            # AWS is still failing: the lease expires by itself before SQS redelivers.
            logger.warning("could not release the claim; it expires with its lease")

    def _give_up(self, message: StepMessage, exc: BaseException) -> None:
        logger.error("giving up on step after repeated infrastructure errors", exc_info=exc)
        run = self.store.get_run(message.thread_id, message.run_id)
        if run is None or not run.active:
            return
        error = f"Infrastructure error after {self.settings.max_receive_count} attempts: {exc}"
        self.runs.finish(
            run,
            status="error",
            thread_status="error",
            error=error,
            run_values={"__error__": {"error": type(exc).__name__, "message": error}},
        )

    def _process(self, message: StepMessage) -> str:
        started = time.perf_counter()
        lease_until = clock.now() + self.settings.lease_s
        before = self.store.claim_step(message.thread_id, message.run_id, message.step, lease_until)
        if before is None:
            logger.info("duplicate or stale step message dropped")
            metrics.add_metric(name="StepsDropped", unit=MetricUnit.Count, value=1)
            return "dropped"
        run = before
        retry = before.claimed_step == message.step
        if run.cancel:
            self.runs.end_cancelled(run)
            return "cancelled"

        graph = load_graph(run.assistant_id, self.settings)
        result = self._already_done(graph, run, message) if retry else None
        if result is None:
            try:
                result = run_superstep(graph, *self._input_and_config(run, message))
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:
                # A node raised: the run ends in error, with the message kept for the client.
                logger.warning("node raised; run ends in error", exc_info=exc)
                self.runs.finish(
                    run,
                    status="error",
                    thread_status="error",
                    error=str(exc),
                    run_values={"__error__": {"error": type(exc).__name__, "message": str(exc)}},
                )
                return "error"
        metrics.add_metric(name="Steps", unit=MetricUnit.Count, value=1)
        metrics.add_metric(
            name="StepDuration",
            unit=MetricUnit.Milliseconds,
            value=(time.perf_counter() - started) * 1000,
        )
        return self._decide(run, message, result)

    def _input_and_config(self, run: RunRecord, message: StepMessage) -> tuple[Any, dict[str, Any]]:
        kwargs = run.kwargs
        first = message.step == 1
        config = thread_config(run.thread_id, kwargs.get("checkpoint_id") if first else None)
        user_config = kwargs.get("config") or {}
        config["configurable"] = {
            **(user_config.get("configurable") or {}),
            **config["configurable"],
        }
        # Checkpoint metadata carries the run id: a retried step uses it to see its own work.
        # The run's metadata goes in too, as the official server does: history can be
        # filtered by it (``get_history(metadata=...)``).
        config["metadata"] = {
            **(user_config.get("metadata") or {}),
            **_checkpoint_metadata(run.metadata),
            "run_id": run.run_id,
            "thread_id": run.thread_id,
            "graph_id": run.assistant_id,
            "assistant_id": run.assistant_id,
        }
        for key in ("tags", "recursion_limit"):
            if key in user_config:
                config[key] = user_config[key]
        if not first:
            return None, config
        if kwargs.get("command"):
            from langgraph.types import Command

            return Command(**kwargs["command"]), config
        return kwargs.get("input"), config

    def _already_done(self, graph: Any, run: RunRecord, message: StepMessage) -> StepResult | None:
        """On a retry: the outcome of the crashed attempt if its checkpoint was written."""
        snapshot = graph.get_state(thread_config(run.thread_id))
        head = snapshot.config.get("configurable", {}).get("checkpoint_id")
        made_by_run = (snapshot.metadata or {}).get("run_id") == run.run_id
        if not head or head == message.checkpoint_id or not made_by_run:
            return None
        logger.info("retried step had already completed; not running it again")
        from functions.jsonable import interrupt_to_api, to_jsonable

        values = to_jsonable(snapshot.values)
        interrupts = {
            t.id: [interrupt_to_api(i) for i in t.interrupts]
            for t in snapshot.tasks
            if t.interrupts
        }
        if interrupts:
            return StepResult("interrupted", head, None, values, interrupts, list(snapshot.next))
        if not snapshot.next:
            return StepResult("done", head, None, values)
        return StepResult("continue", head, None, values, {}, list(snapshot.next))

    def _decide(self, run: RunRecord, message: StepMessage, result: StepResult) -> str:
        if result.outcome == "continue":
            recorded = self.store.complete_step(
                run.thread_id,
                run.run_id,
                message.step,
                checkpoint_id=result.checkpoint_id,
                start_checkpoint_id=result.start_checkpoint_id,
                first_step=message.step == 1,
                lease_until=clock.now() + self.settings.lease_s,
            )
            if recorded is None:
                # Our lease expired and another worker took the step over; it continues the run.
                logger.warning("lost the claim while running the step")
                return "lost"
            if recorded.cancel:
                self.runs.end_cancelled(recorded)
                return "cancelled"
            self.runs.queues.send(
                StepMessage(
                    run.run_id,
                    run.thread_id,
                    message.step + 1,
                    message.priority,
                    result.checkpoint_id,
                )
            )
            return "continue"
        if result.outcome == "interrupted":
            # As on LangGraph Platform: the run succeeded, the thread waits for a human.
            interrupts = [i for items in result.interrupts.values() for i in items]
            values = result.values if isinstance(result.values, dict) else {}
            self.runs.finish(
                run,
                status="success",
                thread_status="interrupted",
                values=result.values,
                interrupts=result.interrupts,
                run_values={**values, "__interrupt__": interrupts},
            )
            return "interrupted"
        self.runs.finish(run, status="success", thread_status="idle", values=result.values)
        return "success"


# Run metadata larger than this stays off the checkpoints (it is kept on the run): every
# checkpoint item carries its metadata, and an item must stay under DynamoDB's 400 KB.
CHECKPOINT_METADATA_MAX_BYTES = 16 * 1024


def _checkpoint_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(metadata, default=str))
    return metadata if size <= CHECKPOINT_METADATA_MAX_BYTES else {}

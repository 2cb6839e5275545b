"""The step worker's engine: claim a step, run one superstep, decide what comes next.

Exactly-once in effect under at-least-once delivery:
- ``Store.claim_step`` is a conditional update on the run item with this attempt's own
  token: the previous step must be done and nobody may own this step. A duplicate message
  fails the claim and is dropped; a step whose worker died is claimed again once its lease
  expired (leases outlive the function timeout, so its worker is certainly dead).
- Completing a step, heart-beating and ending the run need the token: a worker overtaken
  after its lease expired changes nothing.
- A retried step first checks whether the crashed attempt already got its checkpoint
  written (the thread head moved past the message's expected checkpoint, made by this run);
  if so it does not run the superstep again, it only decides what comes next.
- The next step message is sent only after the checkpointer returned (the checkpoint is
  durable) and the step is recorded done. A redelivered message of a step that is done
  re-sends the next one (its sender may have died in between); a message of a final run
  whose ending was left unfinished finishes it.
- Attempts are counted on the run: past ``max_step_attempts`` the run ends ``error`` saying
  which step failed how often and why. ``recursion_limit`` counts the run's supersteps
  across invocations, as LangGraph counts them within one.
"""

from __future__ import annotations

import contextvars
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from functions import clock
from functions.errors import InfrastructureError, NotFoundError
from functions.executor import StepResult, run_superstep, thread_config
from functions.graph_loader import load_graph
from functions.models.context import StepContext, step_context
from functions.models.limits import RateLimited
from functions.models.prices import price_table
from functions.models.usage import Limits, RunUsage, emit_step_metrics, exceeded
from functions.queues import MAX_DELAY_S, StepMessage
from functions.release_metrics import count_for_version
from functions.resources import METRIC_STEP_FAILURES
from functions.run_payloads import RunPayloads
from functions.runs import RunService
from functions.settings import Settings
from functions.store import Claim, RunRecord
from functions.streaming.worker import finish_done_step, step_publisher
from graphs.project import ProjectConfigError

logger = Logger(child=True)
metrics = Metrics()

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    InfrastructureError,
    ClientError,
    BotoCoreError,
)


def default_recursion_limit() -> int:
    """LangGraph's own default (the official server uses it too)."""
    try:
        from langgraph._internal._config import DEFAULT_RECURSION_LIMIT

        return int(DEFAULT_RECURSION_LIMIT)
    except ImportError:  # pragma: no cover - older langgraph
        return 25


def recursion_error_message(limit: int) -> str:
    """The message of LangGraph's ``GraphRecursionError`` for ``limit``."""
    from langgraph.errors import ErrorCode, create_error_message

    return create_error_message(
        message=(
            f"Recursion limit of {limit} reached without hitting a stop condition. "
            "You can increase the limit by setting the `recursion_limit` config key."
        ),
        error_code=ErrorCode.GRAPH_RECURSION_LIMIT,
    )


@dataclass
class Delivery:
    """What SQS told us about the message."""

    receive_count: int = 1
    sent_at_ms: int | None = None
    receipt_handle: str | None = None
    # The Lambda function version handling it (a canary release's alarms count per version).
    version: str = "$LATEST"


class _Heartbeat:
    """Renews a claim's lease (and the message's visibility) while a long step runs."""

    def __init__(
        self,
        worker: StepWorker,
        run: RunRecord,
        token: str,
        message: StepMessage,
        delivery: Delivery,
    ) -> None:
        self._worker = worker
        self._run = run
        self._token = token
        self._message = message
        self._delivery = delivery
        self._stop = threading.Event()
        settings = worker.settings
        self._every = settings.heartbeat_s or settings.lease_s / 3
        # The beat runs in the invocation's context: whatever is scoped to the invocation
        # (the local stack's deadline, a test's fault injection) applies to it too.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._beat,), name="heartbeat", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _beat(self) -> None:
        settings = self._worker.settings
        while not self._stop.wait(self._every):
            try:
                mine = self._worker.store.heartbeat(
                    self._run.thread_id,
                    self._run.run_id,
                    self._token,
                    clock.now() + settings.lease_s,
                )
                if not mine:
                    logger.warning("heartbeat: the claim is no longer ours")
                    return
                if self._delivery.receipt_handle:
                    self._worker.runs.queues.extend_visibility(
                        self._message.priority,
                        self._delivery.receipt_handle,
                        int(settings.visibility_timeout_s),
                    )
            except INFRASTRUCTURE_ERRORS:
                logger.warning("heartbeat failed; retrying at the next beat", exc_info=True)


class StepWorker:
    def __init__(self, runs: RunService) -> None:
        self.runs = runs
        self.settings = runs.settings
        self.store = runs.store

    def process(self, message: StepMessage, delivery: Delivery) -> str:
        """Handle one step message; returns what happened (for logs and tests).

        Raises when the step should be retried (SQS redelivers the message); the attempt is
        counted on the run, and the last allowed attempt ends the run ``error`` instead.
        """
        # Thread-local keys: the local stack runs several workers in one process.
        logger.thread_safe_append_keys(
            run_id=message.run_id,
            thread_id=message.thread_id,
            step=message.step,
            priority=message.priority,
        )
        if delivery.sent_at_ms:
            wait_ms = max(0.0, time.time() * 1000 - delivery.sent_at_ms)
            metrics.add_metric(name="QueueWait", unit=MetricUnit.Milliseconds, value=wait_ms)
        token = uuid.uuid4().hex
        claim = self.store.claim_step(
            message.thread_id,
            message.run_id,
            message.step,
            clock.now() + self.settings.lease_s,
            token,
        )
        if not claim.claimed:
            return self._not_claimed(message, claim.run, delivery)
        assert claim.run is not None
        from functions.models.meter import UsageMeter  # langchain_core: not at cold start

        meter = UsageMeter()
        try:
            return self._claimed(message, claim, token, delivery, meter)
        except Exception as exc:
            # The step failed outside the graph's nodes (AWS, an unreadable checkpoint, a
            # failing rollback): retried, as many times as the run allows.
            metrics.add_metric(name=METRIC_STEP_FAILURES, unit=MetricUnit.Count, value=1)
            count_for_version(METRIC_STEP_FAILURES, delivery.version)
            run = claim.run
            # The failed attempt's model calls were paid for: they count.
            self._account(run, message, meter)
            if claim.attempt >= self.settings.max_step_attempts:
                logger.error("step failed on its last attempt; the run ends", exc_info=exc)
                if self._give_up(run, message, token, claim.attempt, _describe(exc)):
                    return "error"
                raise
            self._release(run, token, exc)
            raise

    # --- not ours ------------------------------------------------------------------------

    def _not_claimed(self, message: StepMessage, run: RunRecord | None, delivery: Delivery) -> str:
        if run is not None and not run.active and run.ending is not None:
            logger.info("finishing the unfinished ending of a final run")
            self.runs.complete_ending(run, recovering=True)
            return "ending finished"
        if (
            run is not None
            and run.active
            and delivery.receive_count > 1
            and run.done_step == message.step
            and run.claimed_step == message.step
        ):
            # This step is done but its worker may have died before sending the next one.
            self.runs.queues.send(
                StepMessage(
                    run.run_id, run.thread_id, message.step + 1, run.priority, run.checkpoint_id
                )
            )
            logger.info("redelivered message of a done step: next step sent again")
            return "next re-sent"
        logger.info("duplicate or stale step message dropped")
        metrics.add_metric(name="StepsDropped", unit=MetricUnit.Count, value=1)
        return "dropped"

    # --- ours ----------------------------------------------------------------------------

    def _claimed(
        self,
        message: StepMessage,
        claim: Claim,
        token: str,
        delivery: Delivery,
        meter: Any,
    ) -> str:
        run = claim.run
        assert run is not None
        if run.cancel:
            self.runs.end_cancelled(run, token)
            return "cancelled"
        if claim.attempt > self.settings.max_step_attempts:
            cause = run.last_error or (
                "no error was recorded: the invocation died (function timeout or out of memory?)"
            )
            self._give_up(run, message, token, claim.attempt - 1, cause)
            return "error"
        limit = _recursion_limit(run)
        if message.step > limit:
            error = recursion_error_message(limit)
            self._end_error(run, token, "GraphRecursionError", error)
            return "error"
        max_steps = _max_steps(run, self.settings)
        if max_steps and message.step > max_steps:
            self._end_error(run, token, "BudgetExceeded", budget_steps_message(max_steps))
            return "error"
        # Failed attempts at this step may have spent the budget already.
        over = exceeded(run.usage, _limits(run, self.settings), f"before step {message.step}")
        if over:
            self._end_error(run, token, "BudgetExceeded", over)
            return "error"
        try:
            graph = load_graph(run.assistant_id, self.settings)
        except NotFoundError as exc:
            # A redeploy removed the graph: retrying cannot help.
            self._end_error(run, token, "GraphNotFound", str(exc))
            return "error"
        except ProjectConfigError as exc:
            # A langgraph.json entry that names no graph (docs/projects.md): nor can it here.
            self._end_error(run, token, "GraphLoadError", str(exc))
            return "error"

        started = time.perf_counter()
        # A deferred attempt is not counted (``defer_step``) but may have published events:
        # its retry numbers its stream items after them, as a retry after a crash does.
        stream_attempt = claim.attempt + run.deferrals
        with _Heartbeat(self, run, token, message, delivery):
            retry = run.claimed_step == message.step
            done = self._already_done(graph, run, message) if retry else None
            if isinstance(done, StepResult):
                result = done
                finish_done_step(self.settings, run, message.step, stream_attempt, done.values)
            else:
                graph_input, config = self._input_and_config(run, message)
                # LangChain hands the config's callbacks to every model a node calls.
                config["callbacks"] = [meter]
                if done == RESUME:
                    # The crashed attempt applied the input and got partway through the
                    # first step: go on from its checkpoint, without applying it again.
                    graph_input = None
                    config["configurable"].pop("checkpoint_id", None)
                # A run that asked for a stream publishes this step's events as they come.
                publisher = step_publisher(
                    self.settings, run, message.step, stream_attempt, resumed=graph_input is None
                )
                try:
                    try:
                        with step_context(
                            StepContext(
                                run.run_id,
                                run.thread_id,
                                run.assistant_id,
                                message.step,
                                run.priority,
                            )
                        ):
                            result = run_superstep(graph, graph_input, config, publisher)
                    except RateLimited:
                        # The step runs again, going on from what it published: all but
                        # the deferred task's error, which is not part of its stream.
                        if publisher is not None:
                            publisher.close(drop_task_errors=True)
                            publisher = None
                        raise
                    finally:
                        if publisher is not None:
                            publisher.close()
                except INFRASTRUCTURE_ERRORS:
                    raise
                except RateLimited as exc:
                    # A model had no capacity: the step is tried again later, not failed.
                    self._account(run, message, meter)
                    return self._defer(run, message, token, exc)
                except Exception as exc:
                    # A node raised: the run ends in error, with the message kept for the client.
                    logger.warning("node raised; run ends in error", exc_info=exc)
                    self._account(run, message, meter)
                    self._end_error(run, token, type(exc).__name__, str(exc))
                    return "error"
        metrics.add_metric(name="Steps", unit=MetricUnit.Count, value=1)
        metrics.add_metric(
            name="StepDuration",
            unit=MetricUnit.Milliseconds,
            value=(time.perf_counter() - started) * 1000,
        )
        self._account(run, message, meter)
        return self._decide(graph, run, message, result, token)

    def _account(self, run: RunRecord, message: StepMessage, meter: Any) -> None:
        """Add the step's model usage to the run (written with the step's own record)."""
        step_usage = meter.take()
        if not step_usage:
            return
        prices = price_table(self.settings.model_prices)
        totals = RunUsage.from_json(run.usage).plus_step(message.step, step_usage, prices)
        run.usage = totals.to_json(prices)
        emit_step_metrics(step_usage, prices)
        logger.info(
            "model usage",
            extra={
                "step_usage": {name: vars(u) for name, u in step_usage.items()},
                "run_total_tokens": run.usage["total_tokens"],
                "run_cost_usd": run.usage["cost_usd"],
            },
        )

    def _defer(self, run: RunRecord, message: StepMessage, token: str, exc: RateLimited) -> str:
        """Re-queue the step for when the model should have capacity (no function sleeps)."""
        if run.deferrals >= self.settings.max_deferrals:
            error = (
                f"Step {message.step} of run {run.run_id} was deferred {run.deferrals:,} times "
                f"for want of model capacity (limit {self.settings.max_deferrals:,}); last: {exc}"
            )
            self._end_error(run, token, "ModelUnavailable", error)
            return "error"
        delay = min(MAX_DELAY_S, math.ceil(exc.retry_after_s))
        if not self.store.defer_step(
            run.thread_id,
            run.run_id,
            token,
            reason=str(exc),
            resend_at=clock.now() + delay + self.settings.resend_after_s,
            usage=run.usage,
        ):
            return "lost"
        # After the claim is given up: a crash in between leaves the message to come back.
        self.runs.queues.send(
            StepMessage(
                run.run_id, run.thread_id, message.step, message.priority, message.checkpoint_id
            ),
            delay_s=delay,
        )
        logger.info("step deferred", extra={"delay_s": delay, "reason": str(exc)})
        metrics.add_metric(name="StepsDeferred", unit=MetricUnit.Count, value=1)
        return "deferred"

    def _release(self, run: RunRecord, token: str, exc: BaseException) -> None:
        """Let the redelivered message claim the step again without waiting for the lease."""
        logger.warning("step failed; the message will be retried", exc_info=exc)
        try:
            self.store.release_claim(
                run.thread_id, run.run_id, token, _describe(exc), usage=run.usage
            )
        except INFRASTRUCTURE_ERRORS:
            # AWS is still failing: the lease expires by itself before SQS redelivers.
            logger.warning("could not release the claim; it expires with its lease")

    def _give_up(
        self, run: RunRecord, message: StepMessage, token: str, attempts: int, cause: str
    ) -> bool:
        error = (
            f"Step {message.step} of run {run.run_id} failed {attempts} times "
            f"(limit {self.settings.max_step_attempts}); last error: {cause}"
        )
        return self._end_error(run, token, "StepFailed", error)

    def _end_error(self, run: RunRecord, token: str, kind: str, error: str) -> bool:
        return self.runs.end(
            run,
            status="error",
            thread_status="error",
            token=token,
            error=error,
            run_values={"__error__": {"error": kind, "message": error}},
        )

    def _input_and_config(self, run: RunRecord, message: StepMessage) -> tuple[Any, dict[str, Any]]:
        kwargs = run.kwargs
        first = message.step == 1
        config = thread_config(run.thread_id, kwargs.get("checkpoint_id") if first else None)
        user_config = kwargs.get("config") or {}
        config["configurable"] = {
            **(user_config.get("configurable") or {}),
            **config["configurable"],
        }
        # Checkpoint metadata carries the run id: a retried step uses it to see its own work,
        # and a rollback to find what the run wrote. The run's metadata goes in too, as the
        # official server does: history can be filtered by it (``get_history(metadata=...)``).
        config["metadata"] = {
            **(user_config.get("metadata") or {}),
            **_checkpoint_metadata(run.metadata),
            "run_id": run.run_id,
            "thread_id": run.thread_id,
            "graph_id": run.assistant_id,
            "assistant_id": run.assistant_id,
        }
        # One superstep per invocation: the run's recursion limit is enforced across
        # invocations (``_recursion_limit``); passed on, it still bounds subgraphs.
        for key in ("tags", "recursion_limit"):
            if key in user_config:
                config[key] = user_config[key]
        if not first:
            return None, config
        payloads = RunPayloads(self.settings.payload_bucket)
        if kwargs.get("command"):
            from langgraph.types import Command

            return Command(**payloads.resolve(kwargs["command"])), config
        return payloads.resolve(kwargs.get("input")), config

    def _already_done(
        self, graph: Any, run: RunRecord, message: StepMessage
    ) -> StepResult | str | None:
        """On a retry: the outcome of the crashed attempt if it finished its superstep,
        ``RESUME`` if it got partway through the first step, None if it wrote nothing."""
        snapshot = graph.get_state(thread_config(run.thread_id))
        head = snapshot.config.get("configurable", {}).get("checkpoint_id")
        made_by_run = (snapshot.metadata or {}).get("run_id") == run.run_id
        if not head or head == message.checkpoint_id or not made_by_run:
            return None
        has_interrupts = any(t.interrupts for t in snapshot.tasks)
        if not has_interrupts and _has_pending_writes(graph, snapshot.config):
            # The crashed attempt ran tasks of the head's superstep and saved their writes,
            # but not the checkpoint after them (``snapshot.next`` leaves such tasks out, so
            # the head would look final): go on from the head, LangGraph applies the saved
            # writes and runs what is left.
            logger.info("retried step had saved some task writes; resuming it")
            return RESUME
        # The first step writes several checkpoints: the input's, the one after
        # ``__start__``, then the first node's. Only the last one means it was done.
        partial_first = (
            message.step == 1
            and snapshot.next
            and not has_interrupts
            and (
                _is_input(snapshot.metadata)
                or _is_input(_metadata(graph, snapshot.parent_config), run.run_id)
            )
        )
        if partial_first:
            logger.info("retried first step had applied its input; resuming it")
            return RESUME
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

    def _decide(
        self, graph: Any, run: RunRecord, message: StepMessage, result: StepResult, token: str
    ) -> str:
        if result.outcome == "continue":
            # A budget stops the run at the step boundary: this step's checkpoint stays, the
            # next step is not run (a run that just finished keeps its outcome).
            over = exceeded(run.usage, _limits(run, self.settings), f"after step {message.step}")
            if over:
                self._end_error(run, token, "BudgetExceeded", over)
                return "error"
            recorded, current = self.store.complete_step(
                run.thread_id,
                run.run_id,
                message.step,
                token=token,
                checkpoint_id=result.checkpoint_id,
                start_checkpoint_id=result.start_checkpoint_id,
                first_step=message.step == 1,
                deadline=clock.now() + self.settings.resend_after_s,
                usage=run.usage,
            )
            if not recorded or current is None:
                return self._lost(graph, run, current)
            if current.cancel:
                self.runs.end_cancelled(current, None)
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
            ended = self.runs.end(
                run,
                status="success",
                thread_status="interrupted",
                token=token,
                values=result.values,
                interrupts=result.interrupts,
                run_values={**values, "__interrupt__": interrupts},
            )
            return "interrupted" if ended else self._not_ended(graph, run)
        ended = self.runs.end(
            run, status="success", thread_status="idle", token=token, values=result.values
        )
        return "success" if ended else self._not_ended(graph, run)

    def _not_ended(self, graph: Any, run: RunRecord) -> str:
        return self._lost(graph, run, self.store.get_run(run.thread_id, run.run_id))

    def _lost(self, graph: Any, run: RunRecord, current: RunRecord | None) -> str:
        """The step was done but its claim was no longer ours when recording it."""
        if current is None:
            # The run was deleted with its thread while the step ran: what the step just
            # wrote must not come back if the thread id is used again.
            thread = self.store.get_thread(run.thread_id)
            if thread is None:
                graph.checkpointer.delete_thread(run.thread_id)
            else:
                graph.checkpointer.delete_for_runs([run.run_id])
            logger.warning("the run was deleted while its step ran; its checkpoints removed")
            return "deleted"
        logger.warning("lost the claim while running the step")
        return "lost"


# ``_already_done``: the crashed attempt got partway through the first step.
RESUME = "resume"


def _has_pending_writes(graph: Any, config: Any) -> bool:
    """Whether tasks of the checkpoint at ``config`` saved writes (a superstep under way)."""
    found = graph.checkpointer.get_tuple(config)
    return bool(found is not None and found.pending_writes)


def _metadata(graph: Any, config: Any) -> dict[str, Any]:
    if not config:
        return {}
    found = graph.checkpointer.get_tuple(config)
    return dict(found.metadata or {}) if found is not None else {}


def _is_input(metadata: Any, run_id: str | None = None) -> bool:
    """Whether checkpoint metadata is an input checkpoint (of run ``run_id``, if given)."""
    metadata = metadata or {}
    if metadata.get("source") != "input":
        return False
    return run_id is None or metadata.get("run_id") == run_id


def _recursion_limit(run: RunRecord) -> int:
    config = run.kwargs.get("config") or {}
    limit = config.get("recursion_limit")
    return int(limit) if isinstance(limit, int) and limit > 0 else default_recursion_limit()


def _max_steps(run: RunRecord, settings: Settings) -> int:
    budget = run.kwargs.get("budget") or {}
    value = budget.get("max_steps")
    return int(value) if isinstance(value, int) and value > 0 else settings.budget_max_steps


def _limits(run: RunRecord, settings: Settings) -> Limits:
    """The run's token and cost limits: its own ``budget``, else the deployment's."""
    budget = run.kwargs.get("budget") or {}
    tokens = budget.get("max_tokens")
    cost = budget.get("max_cost_usd")
    return Limits(
        max_tokens=int(tokens)
        if isinstance(tokens, int) and tokens > 0
        else settings.budget_max_tokens,
        max_cost_usd=float(cost)
        if isinstance(cost, int | float) and cost > 0
        else settings.budget_max_cost_usd,
    )


def budget_steps_message(max_steps: int) -> str:
    """The error of a run stopped by ``max_steps`` (at the boundary before the next step)."""
    return (
        f"budget max_steps={max_steps} exceeded: {max_steps:,} steps done and the run "
        f"needs more (step {max_steps + 1:,} not run)"
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# Run metadata larger than this stays off the checkpoints (it is kept on the run): every
# checkpoint item carries its metadata, and an item must stay under DynamoDB's 400 KB.
CHECKPOINT_METADATA_MAX_BYTES = 16 * 1024


def _checkpoint_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(metadata, default=str))
    return metadata if size <= CHECKPOINT_METADATA_MAX_BYTES else {}

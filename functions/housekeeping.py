"""Housekeeping: re-queue runs whose lease expired with no worker making progress.

A run in the ``LEASE`` GSI partition expects a worker to claim its next step before
``lease_until``. When that time has passed, the step message was lost or its worker died
(a crash can also come back by itself after the SQS visibility timeout; a second message is
harmless, the claim drops the duplicate).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from functions import clock
from functions.queues import StepMessage
from functions.runs import RunService

logger = Logger(child=True)
metrics = Metrics()


def requeue_expired(runs: RunService, now: float | None = None) -> int:
    now = clock.now() if now is None else now
    requeued = 0
    for run in runs.store.expired_leases(now):
        if not run.active:
            continue
        if run.queued:
            # Waiting behind a holder: start it if the holder ended without freeing the thread.
            runs.release_stale_holder(run.thread_id)
            if runs.start_next(run.thread_id) is not None:
                requeued += 1
            else:
                runs.store.extend_lease(run.thread_id, run.run_id, now + runs.settings.lease_s)
            continue
        # Push the deadline first so the next housekeeping pass does not send it again.
        runs.store.extend_lease(run.thread_id, run.run_id, now + runs.settings.lease_s)
        message = StepMessage(
            run.run_id,
            run.thread_id,
            run.done_step + 1,
            run.priority,
            run.checkpoint_id,
        )
        runs.queues.send(message)
        logger.info(
            "re-queued run with expired lease",
            extra={"run_id": run.run_id, "thread_id": run.thread_id, "step": message.step},
        )
        requeued += 1
    if requeued:
        metrics.add_metric(name="RunsRequeued", unit=MetricUnit.Count, value=requeued)
    return requeued

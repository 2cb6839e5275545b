"""Housekeeping: recover runs whose deadline in the lease index passed.

A run sits in the ``LEASE`` GSI partition, keyed by a deadline, from its creation until its
ending is done. When the deadline has passed, one of these happened, and is recovered:

- the run ended but its ending was left unfinished (its worker died halfway): finish it;
- it waits queued behind a holder that ended without handing the thread over: finish the
  holder's ending (which starts the queued run);
- a claimed step's lease expired (its worker died; leases outlive the function timeout):
  a cancel requested meanwhile ends the run, otherwise the claim is freed and the step
  re-sent; the attempt was counted when it was claimed;
- a step message was never claimed (lost, or waiting in a long backlog): it is re-sent, each
  re-send waiting twice as long as the one before (so a backlog gets a few duplicates, which
  the claim drops, not one per pass); re-sends are not attempts (the step never ran), but a
  run whose messages keep vanishing ends ``error`` after ``max_step_resends``.

Every pass pages through the whole backlog, bounded per invocation; what is left waits for
the next pass.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from functions import clock
from functions.queues import StepMessage
from functions.runs import RunService
from functions.settings import Settings
from functions.store import LEASE_SHARDS, RunRecord

logger = Logger(child=True)
metrics = Metrics()

PAGE_SIZE = 100
# Pages read per lease shard and pass: 10 shards x 5 pages x 100 = 5,000 runs a pass at most;
# a larger backlog is worked through over the next passes.
MAX_PAGES_PER_SHARD = 5


def requeue_expired(runs: RunService, now: float | None = None) -> int:
    """Recover every run whose deadline passed (bounded per pass); how many."""
    now = clock.now() if now is None else now
    recovered = 0
    for shard in range(LEASE_SHARDS):
        start_key = None
        for _ in range(MAX_PAGES_PER_SHARD):
            expired, start_key = runs.store.expired_leases(
                now, shard, limit=PAGE_SIZE, start_key=start_key
            )
            for run in expired:
                try:
                    recovered += int(_recover(runs, run, now))
                except Exception:
                    # One run's trouble must not stop the others; it is retried next pass.
                    logger.exception("could not recover a run", extra={"run_id": run.run_id})
            if not start_key:
                break
    if recovered:
        metrics.add_metric(name="RunsRequeued", unit=MetricUnit.Count, value=recovered)
    return recovered


def resend_delay(settings: Settings, resends: int) -> float:
    """How long the re-send number ``resends + 1`` waits to be claimed."""
    return min(settings.resend_after_s * 2 ** min(resends, 32), settings.resend_max_interval_s)


def _recover(runs: RunService, run: RunRecord, now: float) -> bool:
    settings = runs.settings
    store = runs.store
    extra = {"run_id": run.run_id, "thread_id": run.thread_id}
    if not run.active:
        if run.ending is not None:
            logger.info("finishing an unfinished run ending", extra=extra)
            runs.complete_ending(run, recovering=True)
            return True
        store.leave_index(run)
        return False
    if run.queued:
        # Waiting behind a holder: finish the holder's ending if it died halfway through.
        if runs.finish_stale_holder(run.thread_id) or runs.start_next(run.thread_id):
            return True
        store.extend_lease(run.thread_id, run.run_id, now + settings.lease_s)
        return False
    in_progress = run.claimed_step > run.done_step
    if in_progress and run.cancel:
        return runs.end_cancelled(run, None)
    if in_progress:
        # Its worker is dead: free the claim so the re-sent message can take the step.
        if not store.take_over(run, now, now + settings.lease_s):
            return False
        step = run.claimed_step
    else:
        if run.cancel:
            return runs.end_cancelled(run, None)
        if run.resends >= settings.max_step_resends:
            error = (
                f"Step {run.done_step + 1} of run {run.run_id} was re-sent {run.resends} times "
                "and never started"
            )
            return runs.end(
                run,
                status="error",
                thread_status="error",
                token=None,
                error=error,
                run_values={"__error__": {"error": "StepLost", "message": error}},
            )
        # Never claimed: the message was lost or waits in a backlog. Re-send it, waiting
        # twice as long each time, so a long backlog gets a few copies, not one per pass.
        if not store.note_resend(run, now, now + resend_delay(settings, run.resends)):
            return False
        step = run.done_step + 1
    runs.queues.send(StepMessage(run.run_id, run.thread_id, step, run.priority, run.checkpoint_id))
    logger.info("re-sent the step of a run whose deadline passed", extra={**extra, "step": step})
    return True

"""Runs: create (with the multitask strategies), read, cancel, join, and the run lifecycle
shared by the API and the step worker (finish a run, start the next queued one).

One active run per thread: ``Store.acquire_thread`` makes a run the thread's holder; every
other run on the thread waits ``queued`` until the holder ends, and whoever ends a run
starts the oldest queued one (``start_next``).
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from functions import clock
from functions.errors import ConflictError, InvalidRequestError, NotFoundError
from functions.graph_loader import graph_exists, load_graph, resolve_assistant_id
from functions.ids import time_ordered_id
from functions.models import RunCreate
from functions.queues import StepMessage, StepQueues
from functions.resources import run_status_metric
from functions.settings import Settings
from functions.store import RunRecord, Store, ThreadRecord, now_iso

logger = Logger(child=True)
metrics = Metrics()

FINAL_RUN_STATUSES = ("success", "error", "timeout", "interrupted")


class RunService:
    def __init__(self, settings: Settings, store: Store, queues: StepQueues) -> None:
        self.settings = settings
        self.store = store
        self.queues = queues

    # --- reading -------------------------------------------------------------------------

    def thread_for(self, tenant: str, thread_id: str) -> ThreadRecord:
        thread = self.store.get_thread(thread_id)
        # Another tenant's thread is indistinguishable from a missing one.
        if thread is None or thread.tenant != tenant:
            raise NotFoundError(f"Thread {thread_id!r} not found.")
        return thread

    def get(self, tenant: str, thread_id: str, run_id: str) -> RunRecord:
        self.thread_for(tenant, thread_id)
        run = self.store.get_run(thread_id, run_id)
        if run is None:
            raise NotFoundError(f"Run {run_id!r} not found on thread {thread_id!r}.")
        return run

    def list(
        self, tenant: str, thread_id: str, *, limit: int, offset: int, status: str | None
    ) -> list[RunRecord]:
        self.thread_for(tenant, thread_id)
        runs = self.store.list_runs(thread_id)
        if status:
            runs = [r for r in runs if r.status == status]
        runs.reverse()  # newest first, as the official server lists them
        return runs[offset : offset + limit]

    # --- creating ------------------------------------------------------------------------

    def create(self, tenant: str, thread_id: str, body: RunCreate) -> RunRecord:
        # The platform's assistant UUID of a graph names that graph here.
        body = body.model_copy(update={"assistant_id": resolve_assistant_id(body.assistant_id)})
        if not graph_exists(body.assistant_id):
            raise NotFoundError(f"Assistant {body.assistant_id!r} not found.")
        if body.interrupt_before or body.interrupt_after:
            raise InvalidRequestError(
                "interrupt_before/interrupt_after are not supported; use interrupt() in a node."
            )
        start_checkpoint_id = body.start_checkpoint_id()
        if start_checkpoint_id:
            # Checked before anything is stored: an unknown checkpoint would start the run
            # from an empty state and fork the thread there.
            from functions.threads import require_checkpoint

            graph = load_graph(body.assistant_id, self.settings)
            require_checkpoint(graph, thread_id, start_checkpoint_id)
        thread = self._thread_for_run(tenant, thread_id, body)
        now = now_iso()
        run = RunRecord(
            run_id=time_ordered_id(),
            thread_id=thread_id,
            tenant=tenant,
            assistant_id=body.assistant_id,
            status="pending",
            created_at=now,
            updated_at=now,
            # As the official server: the thread's metadata and the graph, then the run's own.
            metadata={
                "created_by": "system",
                **thread.metadata,
                "graph_id": body.assistant_id,
                "assistant_id": body.assistant_id,
                **(body.metadata or {}),
            },
            multitask_strategy=body.multitask_strategy,
            priority=body.priority,
            kwargs=body.run_kwargs(),
            queued=True,
        )
        delay_s = body.after_seconds or 0
        if self.store.acquire_thread(thread_id, run.run_id):
            run.queued = False
            run.lease_until = clock.now() + delay_s + self.settings.lease_s
            try:
                self.store.put_run(run)
            except Exception:
                # No run record (too large to store, or AWS failed): give the thread back as
                # it was, or it would stay busy with a run that does not exist.
                self.store.release_thread(
                    thread_id, run.run_id, status=thread.status, interrupts=thread.interrupts
                )
                raise
            self.queues.send(StepMessage(run.run_id, thread_id, 1, run.priority), delay_s=delay_s)
            logger.info("run created", extra={"run_id": run.run_id, "thread_id": thread_id})
            return run

        # The thread is busy: apply the multitask strategy.
        active_id = self._active_run_id(thread_id) or thread.active_run_id
        if body.multitask_strategy == "reject":
            raise ConflictError(
                f"Thread {thread_id!r} already has an active run ({active_id}); "
                "wait for it, or use multitask_strategy enqueue/interrupt/rollback."
            )
        # Housekeeping looks at queued runs too once this deadline passes (a stuck holder).
        run.lease_until = clock.now() + self.settings.lease_s
        self.store.put_run(run)
        self.store.add_queued_hint(thread_id, 1)
        if body.multitask_strategy in ("interrupt", "rollback") and active_id:
            active = self.store.get_run(thread_id, active_id)
            if active is not None and active.active:
                self.cancel_active(active, body.multitask_strategy)
        # The holder may have ended while we stored the queued run: start it ourselves then.
        self.start_next(thread_id)
        return self.store.get_run(thread_id, run.run_id) or run

    def _thread_for_run(self, tenant: str, thread_id: str, body: RunCreate) -> ThreadRecord:
        thread = self.store.get_thread(thread_id)
        if thread is not None and thread.tenant != tenant:
            raise NotFoundError(f"Thread {thread_id!r} not found.")
        if thread is None:
            if body.if_not_exists != "create":
                raise NotFoundError(
                    f"Thread {thread_id!r} not found; create it first or pass if_not_exists='create'."
                )
            now = now_iso()
            thread = ThreadRecord(
                thread_id, tenant, now, now, metadata={"graph_id": body.assistant_id}
            )
            self.store.put_thread(thread, if_absent=True)
            return thread
        if thread.metadata.get("graph_id") != body.assistant_id:
            # As the official server does: the thread remembers the graph its state belongs to.
            thread.metadata = {
                **thread.metadata,
                "graph_id": body.assistant_id,
                "assistant_id": body.assistant_id,
            }
            self.store.update_thread_metadata(thread_id, thread.metadata)
        return thread

    def _active_run_id(self, thread_id: str) -> str | None:
        thread = self.store.get_thread(thread_id)
        return None if thread is None else thread.active_run_id

    # --- lifecycle -----------------------------------------------------------------------

    def start_next(self, thread_id: str, queued_hint: int = 1) -> RunRecord | None:
        """Start the oldest queued run if the thread is free; the started run or None.

        ``queued_hint`` 0 (from the thread record) means no run waits: no query needed.
        """
        if queued_hint <= 0:
            return None
        queued = [r for r in self.store.list_runs(thread_id) if r.queued and r.status == "pending"]
        if not queued:
            return None
        run = queued[0]
        if not self.store.acquire_thread(thread_id, run.run_id, dequeue=True):
            return None
        delay_s = int(run.kwargs.get("after_seconds") or 0)
        lease_until = clock.now() + delay_s + self.settings.lease_s
        if not self.store.start_queued_run(thread_id, run.run_id, lease_until):
            # Someone cancelled it in between: give the thread back and try the next one.
            self.store.release_thread(thread_id, run.run_id, status="idle")
            return self.start_next(thread_id)
        self.queues.send(StepMessage(run.run_id, thread_id, 1, run.priority), delay_s=delay_s)
        logger.info("queued run started", extra={"run_id": run.run_id, "thread_id": thread_id})
        return run

    def release_stale_holder(self, thread_id: str) -> bool:
        """Free a thread still held by a run that has ended (its worker died between ending
        the run and freeing the thread); True if it was freed."""
        thread = self.store.get_thread(thread_id)
        if thread is None or not thread.active_run_id:
            return False
        holder = self.store.get_run(thread_id, thread.active_run_id)
        if holder is not None and holder.active:
            return False
        status = "error" if holder is not None and holder.status == "error" else "idle"
        self.store.release_thread(thread_id, thread.active_run_id, status=status)
        logger.warning("freed a thread held by an ended run", extra={"thread_id": thread_id})
        return True

    def finish(
        self,
        run: RunRecord,
        *,
        status: str,
        thread_status: str,
        values: Any = None,
        interrupts: dict[str, Any] | None = None,
        error: str | None = None,
        run_values: Any = None,
    ) -> None:
        """End a run, free its thread and start the next queued run."""
        ended = self.store.finish_run(
            run.thread_id,
            run.run_id,
            status=status,
            error=error,
            values=run_values if run_values is not None else values,
        )
        if ended is None:
            logger.info("run already final", extra={"run_id": run.run_id})
        else:
            metrics.add_metric(name=run_status_metric(status), unit=MetricUnit.Count, value=1)
        hint = self.store.release_thread(
            run.thread_id, run.run_id, status=thread_status, values=values, interrupts=interrupts
        )
        self.start_next(run.thread_id, hint)

    def cancel_active(self, run: RunRecord, action: str) -> None:
        """Cancel at the next step boundary; a run no worker has claimed yet ends at once."""
        flagged = self.store.request_cancel(run.thread_id, run.run_id, action)
        if flagged is None:
            return  # already final
        if flagged.claimed_step == 0 and self.end_cancelled(flagged, only_if_unclaimed=True):
            return
        logger.info("cancel requested", extra={"run_id": run.run_id, "action": action})

    def end_cancelled(self, run: RunRecord, *, only_if_unclaimed: bool = False) -> bool:
        """End a run flagged for cancel: ``interrupted``, or deleted after a rollback."""
        ended = self.store.finish_run(
            run.thread_id, run.run_id, status="interrupted", only_if_unclaimed=only_if_unclaimed
        )
        if ended is None:
            return False
        metrics.add_metric(name="RunsInterrupted", unit=MetricUnit.Count, value=1)
        if run.cancel == "rollback":
            self._roll_back(ended)
        if not run.queued:
            self.store.release_thread(run.thread_id, run.run_id, status="idle")
        self.start_next(run.thread_id)
        return True

    def _roll_back(self, run: RunRecord) -> None:
        """Undo a run's effect on the thread: its state returns to where the run started."""
        if run.started:
            graph = load_graph(run.assistant_id, self.settings)
            from functions.executor import thread_config

            if run.start_checkpoint_id:
                # A copy of the starting checkpoint becomes the thread's head.
                graph.update_state(
                    thread_config(run.thread_id, run.start_checkpoint_id), None, as_node="__copy__"
                )
            else:
                graph.checkpointer.delete_thread(run.thread_id)
        self.store.delete_run(run.thread_id, run.run_id)

    def cancel(
        self, tenant: str, thread_id: str, run_id: str, *, action: str, wait: bool
    ) -> RunRecord:
        run = self.get(tenant, thread_id, run_id)
        if not run.active:
            # 404 as the official server answers (the SDK raises NotFoundError).
            raise NotFoundError(
                f"No matching runs to cancel: run {run_id!r} is already {run.status}."
            )
        self.cancel_active(run, action)
        if wait:
            return self.wait_final(thread_id, run_id) or run
        return self.store.get_run(thread_id, run_id) or run

    # --- waiting -------------------------------------------------------------------------

    def wait_final(self, thread_id: str, run_id: str) -> RunRecord | None:
        """Poll the run until it is final or the join timeout passes; None if it was deleted."""
        deadline = time.monotonic() + self.settings.join_timeout_s
        while True:
            run = self.store.get_run(thread_id, run_id)
            if run is None or not run.active or time.monotonic() >= deadline:
                return run
            time.sleep(self.settings.join_poll_s)

    def join(self, tenant: str, thread_id: str, run_id: str) -> Any:
        """The run's final values (as the official ``join``), or the thread's current values
        if it is still going when the join timeout passes."""
        self.get(tenant, thread_id, run_id)
        run = self.wait_final(thread_id, run_id)
        if run is None:
            return {}
        if run.values is not None and not run.active:
            return run.values
        return self._current_values(run)

    def _current_values(self, run: RunRecord) -> Any:
        from functions.executor import thread_config
        from functions.jsonable import to_jsonable

        graph = load_graph(run.assistant_id, self.settings)
        return to_jsonable(graph.get_state(thread_config(run.thread_id)).values)

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
from functions.api_models import RunCreate
from functions.errors import (
    ConflictError,
    InfrastructureError,
    InvalidRequestError,
    NotFoundError,
)
from functions.graph_loader import graph_exists, load_graph, resolve_assistant_id
from functions.ids import time_ordered_id
from functions.queues import StepMessage, StepQueues
from functions.resources import run_status_metric
from functions.run_payloads import RunPayloads
from functions.settings import Settings
from functions.store import Ending, RunRecord, Store, ThreadRecord, now_iso
from functions.webhooks.events import RunEvents
from functions.webhooks.urls import check_webhook_url

logger = Logger(child=True)
metrics = Metrics()

FINAL_RUN_STATUSES = ("success", "error", "timeout", "interrupted")


class RunService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        queues: StepQueues,
        events: RunEvents | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queues = queues
        # The run-ended event of every ending (webhooks): only with a bus configured.
        self.events = events or RunEvents(settings.event_bus_name)

    @classmethod
    def from_settings(cls, settings: Settings) -> RunService:
        """The service a handler builds from its deployment settings."""
        store = Store(settings.runtime_table, ttl_days=settings.ttl_days)
        return cls(settings, store, StepQueues(settings))

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
        if body.webhook is not None:
            check_webhook_url(body.webhook, self.settings)
        if body.config:
            from functions.models.routing import check_run_models

            try:
                check_run_models(body.config, self.settings.run_models)
            except ValueError as exc:
                raise InvalidRequestError(str(exc)) from exc
        start_checkpoint_id = body.start_checkpoint_id()
        if start_checkpoint_id:
            # Checked before anything is stored: an unknown checkpoint would start the run
            # from an empty state and fork the thread there.
            from functions.threads import require_checkpoint

            graph = load_graph(body.assistant_id, self.settings)
            require_checkpoint(graph, thread_id, start_checkpoint_id)
        thread = self._thread_for_run(tenant, thread_id, body)
        now = now_iso()
        run_id = time_ordered_id()
        # A large input goes to the payload bucket first: the record keeps a reference.
        kwargs = RunPayloads(self.settings.payload_bucket).offload(
            thread_id, run_id, body.run_kwargs()
        )
        run = RunRecord(
            run_id=run_id,
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
            kwargs=kwargs,
            queued=True,
        )
        delay_s = body.after_seconds or 0
        # The first step must be claimed by then, or housekeeping sends it again.
        run.lease_until = clock.now() + delay_s + self.settings.lease_s
        run.queued = False
        # One transaction stores the run and makes it the thread's holder: there is never
        # a holder without a run record, nor a run that holds nothing while it runs.
        if self.store.create_run(run):
            try:
                self.queues.send(
                    StepMessage(run.run_id, thread_id, 1, run.priority), delay_s=delay_s
                )
            except InfrastructureError:
                # The run is stored: housekeeping sends its first step when the deadline
                # passes. Answering 5xx would make the client create it a second time.
                logger.warning("first step not sent; housekeeping will send it")
            logger.info("run created", extra={"run_id": run.run_id, "thread_id": thread_id})
            self._settle_approvals(body, run)
            return run

        # The thread is busy: apply the multitask strategy.
        active_id = self._active_run_id(thread_id) or thread.active_run_id
        if body.multitask_strategy == "reject":
            raise ConflictError(
                f"Thread {thread_id!r} already has an active run ({active_id}); "
                "wait for it, or use multitask_strategy enqueue/interrupt/rollback."
            )
        # Housekeeping looks at queued runs too once this deadline passes (a stuck holder).
        run.queued = True
        run.lease_until = clock.now() + self.settings.lease_s
        cancels = body.multitask_strategy in ("interrupt", "rollback") and active_id
        cancel = (str(active_id), body.multitask_strategy) if cancels else None
        if not self.store.create_queued_run(run, cancel=cancel):
            cancel = None  # the active run ended meanwhile: nothing to cancel
            self.store.create_queued_run(run)
        if cancel is not None:
            active = self.store.get_run(thread_id, cancel[0])
            if active is not None and active.active:
                # Flagged already; it ends at once if no step is in progress.
                self.cancel_active(active, cancel[1])
        # The holder may have ended (or died halfway through its ending) while we stored the
        # queued run: finish that, or start the queued run ourselves.
        if not self.finish_stale_holder(thread_id):
            self.start_next(thread_id)
        self._settle_approvals(body, run)
        return self.store.get_run(thread_id, run.run_id) or run

    def _settle_approvals(self, body: RunCreate, run: RunRecord) -> None:
        """A client's own resume settles the thread's pending approvals (functions/approvals)."""
        if body.command is None or body.command.resume is None:
            return
        if (body.metadata or {}).get("approval_id"):
            return  # the approval's own resume
        from functions.approvals.service import ApprovalService

        try:
            ApprovalService(self).settle_by_api(run.thread_id, body.command.resume, run.run_id)
        except InfrastructureError:
            logger.warning("approvals not settled by the API resume", extra={"run_id": run.run_id})

    def _cancel_approvals(self, run: RunRecord) -> bool:
        """A run that stopped for approval has ended (``success``, thread ``interrupted``);
        cancelling it withdraws its pending approvals (functions/approvals): True if any."""
        if run.status != "success":
            return False
        from functions.approvals.service import ApprovalService

        return ApprovalService(self).cancel_for_run(run) > 0

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
    #
    # The end of a run is one durable, resumable sequence (ARCHITECTURE.md, "The end of a
    # run"). ``end`` records the final status together with the effects still to do, in one
    # conditional write; ``complete_ending`` does them in order, each idempotent and keyed by
    # the run, then marks the ending done. Whoever meets an unfinished ending finishes it:
    # the worker that ended the run, a redelivered message of the run, a run created on the
    # held thread, housekeeping (an unfinished ending stays in the lease index). A new effect
    # is added to ``_effects_for`` and ``_do_effect``, never bolted on after them.

    def end(
        self,
        run: RunRecord,
        *,
        status: str,
        thread_status: str,
        token: str | None,
        values: Any = None,
        interrupts: dict[str, Any] | None = None,
        error: str | None = None,
        run_values: Any = None,
    ) -> bool:
        """End an active run; False if it was not ours to end (already final, or another
        worker owns its step). ``values`` become the thread's values."""
        now = clock.now()
        cancel = run.cancel if status == "interrupted" else None
        ending = Ending(
            thread_status=thread_status,
            effects=_effects_for(cancel, interrupts, events=self._events_on()),
            interrupts=interrupts or {},
            set_values=values is not None,
            ended_at=now_iso(),
        )
        final_values = run_values if run_values is not None else values
        # What is left after the one-write ending (the run-ended event) stays recorded in it.
        after = ending.effects[2:]
        remaining = Ending(**{**ending.__dict__, "effects": after}) if after else None
        if (
            ending.effects[:2] == ["thread", "next"]
            and after in ([], ["event"])
            and self.store.end_at_once(
                run,
                status,
                ending,
                token=token,
                error=error,
                values=final_values,
                thread_values=_thread_values(
                    RunRecord(**{**run.__dict__, "values": final_values}), ending
                ),
                now=now,
                remaining=remaining,
                recheck_at=now + self.settings.lease_s,
            )
        ):
            # Nothing waited queued: the outcome and the thread's release in one write.
            metrics.add_metric(name=run_status_metric(status), unit=MetricUnit.Count, value=1)
            if remaining is not None:
                ended = {"status": status, "values": final_values, "ending": remaining}
                if error is not None:
                    ended["error"] = error
                self.complete_ending(RunRecord(**{**run.__dict__, **ended}))
            return True
        done, current = self.store.record_ending(
            run,
            status,
            ending,
            token=token,
            error=error,
            values=final_values,
            cancel=cancel,
            now=now,
            recheck_at=now + self.settings.lease_s,
        )
        if not done or current is None:
            if current is not None and current.ending is not None and not current.active:
                self.complete_ending(current, recovering=True)
            logger.info("run not ended here", extra={"run_id": run.run_id, "status": status})
            return False
        metrics.add_metric(name=run_status_metric(status), unit=MetricUnit.Count, value=1)
        self.complete_ending(current)
        return True

    def complete_ending(self, run: RunRecord, *, recovering: bool = False) -> None:
        """Do what remains of a final run's ending (all of it: every effect is idempotent).

        ``recovering``: someone else's ending, found unfinished; the attempt is counted, and
        past ``max_step_attempts`` an effect that keeps failing is abandoned (logged and
        counted in a metric) so that no ending is retried forever.
        """
        ending = run.ending
        if ending is None:
            return
        if recovering:
            ending = self.store.note_ending_attempt(run, clock.now() + self.settings.lease_s)
            if ending is None:
                return  # finished by someone else meanwhile
        give_up = ending.attempts > self.settings.max_step_attempts
        released: ThreadRecord | None = None
        for effect in ending.effects:
            try:
                released = self._do_effect(effect, run, ending, released)
            except Exception:
                if not give_up:
                    raise
                logger.exception(
                    "abandoned an effect of a run ending after repeated failures",
                    extra={"run_id": run.run_id, "effect": effect, "attempts": ending.attempts},
                )
                metrics.add_metric(name="RunEndingEffectsAbandoned", unit=MetricUnit.Count, value=1)
                if effect == "rollback":
                    ending.thread_status = "error"
        if "delete" not in ending.effects:
            self.store.mark_ended(run)

    def _do_effect(
        self, effect: str, run: RunRecord, ending: Ending, released: ThreadRecord | None
    ) -> ThreadRecord | None:
        if effect == "rollback":
            self._roll_back(run)
        elif effect == "thread":
            status, interrupts = ending.thread_status, ending.interrupts
            if "rollback" in ending.effects:
                status, interrupts = self._state_after_rollback(run)
            return self.store.release_thread(
                run.thread_id,
                run.run_id,
                status=status,
                values=_thread_values(run, ending),
                interrupts=interrupts,
            )
        elif effect == "next":
            self.start_next(run.thread_id, released.queued_runs if released is not None else 1)
        elif effect == "delete":
            RunPayloads(self.settings.payload_bucket).delete_run(
                run.thread_id, run.run_id, run.kwargs
            )
            self.store.delete_run(run.thread_id, run.run_id)
        elif effect == "approval":
            from functions.approvals.service import ApprovalService

            ApprovalService(self).start(run, ending)
        elif effect == "event":
            self.events.put_run_ended(run, ending, ending.ended_at or run.updated_at)
        else:
            raise ValueError(f"unknown run-ending effect {effect!r}")
        return released

    def _events_on(self) -> bool:
        return bool(self.settings.event_bus_name)

    def start_next(self, thread_id: str, queued_hint: int = 1) -> RunRecord | None:
        """Start the oldest queued run if the thread is free; the started run or None.

        ``queued_hint`` 0 (the thread's count of queued runs) means no run waits: no query.
        """
        if queued_hint <= 0:
            return None
        for run in self.store.list_runs(thread_id):
            if not (run.queued and run.status == "pending"):
                continue
            delay_s = int(run.kwargs.get("after_seconds") or 0)
            deadline = clock.now() + delay_s + self.settings.lease_s
            # One transaction: the thread's holder and the run's start change together.
            if self.store.hand_over(thread_id, run.run_id, deadline):
                try:
                    self.queues.send(
                        StepMessage(run.run_id, thread_id, 1, run.priority), delay_s=delay_s
                    )
                except InfrastructureError:
                    logger.warning("first step of a queued run not sent; housekeeping will")
                logger.info(
                    "queued run started", extra={"run_id": run.run_id, "thread_id": thread_id}
                )
                return run
            thread = self.store.get_thread(thread_id)
            if thread is None or thread.active_run_id:
                return None  # another run holds the thread; it starts the next when it ends
            # This run was cancelled meanwhile: try the next one.
        return None

    def finish_stale_holder(self, thread_id: str) -> bool:
        """Finish what a thread's holder left undone: a final run whose ending is unfinished
        (its worker died halfway), a holder record that is gone, a state update whose
        process died. True if something was finished (the next queued run is then started)."""
        thread = self.store.get_thread(thread_id)
        if thread is None or not thread.active_run_id:
            return False
        holder_id = thread.active_run_id
        if not thread.held_by_run:
            if thread.holder_until is None or thread.holder_until >= clock.now():
                return False
            # The state update's process died holding the thread; its state is unchanged.
            status = "interrupted" if thread.interrupts else "idle"
            freed = self.store.release_thread(
                thread_id, holder_id, status=status, interrupts=thread.interrupts
            )
            self.start_next(thread_id, freed.queued_runs if freed else 1)
            return True
        holder = self.store.get_run(thread_id, holder_id)
        if holder is not None and holder.active:
            return False
        if holder is not None and holder.ending is not None:
            self.complete_ending(holder, recovering=True)
            return True
        # The holder's record is gone (deleted, expired) or ended without an ending record.
        status = "error" if holder is not None and holder.status == "error" else "idle"
        freed = self.store.release_thread(
            thread_id, holder_id, status=status, interrupts=thread.interrupts
        )
        logger.warning("freed a thread held by an ended run", extra={"thread_id": thread_id})
        self.start_next(thread_id, freed.queued_runs if freed else 1)
        return True

    def cancel_active(self, run: RunRecord, action: str) -> None:
        """Cancel a run: at once when no step is in progress (queued, between steps, or its
        worker died), else at the end of the step in progress."""
        now = clock.now()
        if run.queued:
            events = ["event"] if self._events_on() else []
            ending = Ending(
                thread_status="idle",
                effects=events + (["delete"] if action == "rollback" else []),
                ended_at=now_iso(),
            )
            ended = self.store.end_queued_run(
                run, "interrupted", ending, cancel=action, recheck_at=now + self.settings.lease_s
            )
            if ended is not None:
                metrics.add_metric(name="RunsInterrupted", unit=MetricUnit.Count, value=1)
                self.complete_ending(ended)
                return
            current = self.store.get_run(run.thread_id, run.run_id)
            if current is None or not current.active:
                return
            run = current  # started meanwhile
        run.cancel = action
        if self.end(run, status="interrupted", thread_status="idle", token=None):
            return
        flagged = self.store.request_cancel(run.thread_id, run.run_id, action)
        if flagged is not None:
            logger.info("cancel requested", extra={"run_id": run.run_id, "action": action})

    def end_cancelled(self, run: RunRecord, token: str | None) -> bool:
        """End a run flagged for cancel: ``interrupted``, or rolled back and deleted."""
        return self.end(run, status="interrupted", thread_status="idle", token=token)

    def _roll_back(self, run: RunRecord) -> None:
        """Undo the run's checkpoints: the thread's state returns to where the run started.

        Only what the run wrote is removed: the head is walked back while its checkpoints
        carry this run's id; the first one that does not is where the run started, and a
        copy of it becomes the head. Only if every checkpoint down to the root is the
        run's (the thread was empty) is the thread's checkpoint history deleted. Repeating
        it changes nothing: the copy carries no run id, and once the thread is released
        (the next effect) another run may own its head.
        """
        thread = self.store.get_thread(run.thread_id)
        if thread is None or thread.active_run_id != run.run_id:
            return
        from functions.executor import thread_config

        graph = load_graph(run.assistant_id, self.settings)
        saver = graph.checkpointer
        current = saver.get_tuple(thread_config(run.thread_id))
        wrote = False
        while current is not None and (current.metadata or {}).get("run_id") == run.run_id:
            wrote = True
            parent = current.parent_config
            current = saver.get_tuple(parent) if parent else None
        if not wrote:
            return
        if current is None:
            saver.delete_thread(run.thread_id)
            return
        start_id = current.config["configurable"]["checkpoint_id"]
        graph.update_state(thread_config(run.thread_id, start_id), None, as_node="__copy__")

    def _state_after_rollback(self, run: RunRecord) -> tuple[str, dict[str, Any]]:
        """The thread's status and interrupts once a rollback restored its state."""
        from functions.executor import thread_config
        from functions.jsonable import interrupt_to_api

        graph = load_graph(run.assistant_id, self.settings)
        snapshot = graph.get_state(thread_config(run.thread_id))
        interrupts = {
            t.id: [interrupt_to_api(i) for i in t.interrupts]
            for t in snapshot.tasks
            if t.interrupts
        }
        return ("interrupted" if interrupts else "idle"), interrupts

    def cancel(
        self, tenant: str, thread_id: str, run_id: str, *, action: str, wait: bool
    ) -> RunRecord:
        run = self.get(tenant, thread_id, run_id)
        if not run.active:
            if self._cancel_approvals(run):
                return self.store.get_run(thread_id, run_id) or run
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


def _effects_for(
    cancel: str | None, interrupts: dict[str, Any] | None = None, *, events: bool = False
) -> list[str]:
    """The effects of a run's ending, in order (see ``RunService.end``). A run stopped for
    approval (functions/approvals) stores it and starts its state machine once the thread
    shows the interrupt. ``event``: the run-ended event (webhooks), after the thread's
    release so that a receiver reading the thread sees its final state, and before a
    rolled-back run's record is deleted."""
    event = ["event"] if events else []
    if cancel == "rollback":
        return ["rollback", "thread", "next", *event, "delete"]
    if interrupts and _asks_approval(interrupts):
        return ["thread", "approval", "next", *event]
    return ["thread", "next", *event]


def _asks_approval(interrupts: dict[str, Any]) -> bool:
    from functions.approvals.request import is_approval

    return any(is_approval(item.get("value")) for items in interrupts.values() for item in items)


def _thread_values(run: RunRecord, ending: Ending) -> Any:
    """The values a run's ending gives its thread (None: the thread's stay as they are)."""
    if not ending.set_values or run.values is None:
        return None
    if isinstance(run.values, dict):
        return {k: v for k, v in run.values.items() if k != "__interrupt__"}
    return run.values

"""The approval flow, over the records, the state machine, SES and the run path.

1. ``start`` (a run-ending effect, ``functions.runs``): store each approval the run stopped
   for and start its execution (named by the approval id: a repeated start is harmless).
2. ``notify`` (the state machine's token message): keep the task token, email each reviewer
   not emailed yet a signed link.
3. ``decide`` (the reviewer's page): verify the link, settle the approval once, hand the
   decision to the execution (``SendTaskSuccess``).
4. ``on_resume`` (the state machine's resume message, after a decision or on timeout): start
   the run that resumes the thread with ``Command(resume=...)``, once.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aws_lambda_powertools import Logger

from functions import clock
from functions.approvals import clients, tokens
from functions.approvals.records import PENDING, ApprovalRecord, ApprovalRecords
from functions.approvals.request import (
    approval_id_for,
    approval_requests,
    parse_decision,
    resume_value,
)
from functions.errors import ConflictError, InfrastructureError, NotFoundError
from functions.store import now_iso

if TYPE_CHECKING:
    from functions.runs import RunService
    from functions.settings import Settings
    from functions.store import Ending, RunRecord

logger = Logger(child=True)

_STATUS_OF = {"approve": "approved", "reject": "rejected"}
# Used when neither a key nor a secret is configured (tests of other parts, a bare process):
# links then verify only within this process. The local stack always sets a key.
_PROCESS_KEY = secrets.token_bytes(32)


class AlreadyDecided(ConflictError):
    def __init__(self, record: ApprovalRecord) -> None:
        super().__init__(f"This approval request was already decided: {record.status}.")
        self.record = record


class ApprovalService:
    def __init__(self, runs: RunService) -> None:
        self.runs = runs
        self.settings = runs.settings
        self.records = ApprovalRecords(self.settings.runtime_table)

    # --- keys and links ----------------------------------------------------------------

    def signing_key(self) -> bytes:
        if self.settings.approval_signing_key:
            return self.settings.approval_signing_key.encode()
        if self.settings.approval_signing_secret_arn:
            return clients.secret_value(self.settings.approval_signing_secret_arn).encode()
        return _PROCESS_KEY

    def link(self, record: ApprovalRecord, reviewer: str) -> str:
        token = tokens.sign(self.signing_key(), record.approval_id, reviewer, record.expires_at)
        base = self.settings.public_base_url.rstrip("/")
        return f"{base}/approvals/{quote(record.approval_id)}?token={quote(token)}"

    # --- 1. start (a run-ending effect) ------------------------------------------------

    def _records_for(self, run: RunRecord, ending: Ending) -> list[ApprovalRecord]:
        """The approvals a run's ending asks for, as new records (ids derived from the run
        and its interrupts: the same ones whoever computes them)."""
        requests = approval_requests(
            ending.interrupts,
            default_reviewers=self.settings.reviewers,
            default_timeout_s=self.settings.approval_timeout_s,
        )
        return [
            ApprovalRecord(
                approval_id=approval_id_for(run.run_id, request.interrupt_id),
                tenant=run.tenant,
                thread_id=run.thread_id,
                run_id=run.run_id,
                assistant_id=run.assistant_id,
                interrupt_id=request.interrupt_id,
                summary=request.summary,
                action=request.action,
                reviewers=list(request.reviewers),
                timeout_s=request.timeout_s,
                created_at=now_iso(),
                expires_at=int(clock.now()) + request.timeout_s,
                reason=request.reason,
            )
            for request in requests
        ]

    def start(self, run: RunRecord, ending: Ending) -> None:
        """Idempotent: keyed by the run and the interrupt."""
        for record in self._records_for(run, ending):
            approval_id = record.approval_id
            if not self.records.put_if_absent(record):
                record = self.records.get(approval_id) or record
            if not record.reviewers:
                logger.warning(
                    "approval has no reviewers (set LAMBDAGRAPH_REVIEWERS); settle it via the API",
                    extra={"approval_id": approval_id},
                )
            if not self.settings.approval_state_machine_arn:
                logger.warning(
                    "approvals are not configured: no state machine; the approval waits for "
                    "a resume through the API",
                    extra={"approval_id": approval_id},
                )
                continue
            if record.status != PENDING or record.execution_arn:
                continue
            # The remaining time, not the full timeout: a start retried later expires on time.
            remaining = max(1, record.expires_at - int(clock.now()))
            arn = clients.start_execution(
                self.settings.approval_state_machine_arn,
                approval_id,
                {"approval_id": approval_id, "timeout_seconds": remaining},
            )
            self.records.set_execution(approval_id, arn)
            logger.info(
                "approval started", extra={"approval_id": approval_id, "run_id": run.run_id}
            )

    # --- 2. notify (the token message) -------------------------------------------------

    def notify(self, approval_id: str, task_token: str) -> int:
        """Keep the token, email reviewers not emailed yet; how many emails were sent."""
        from functions.approvals.emails import render_email

        record = self.records.get(approval_id)
        if record is None:
            logger.warning(
                "token message for an unknown approval", extra={"approval_id": approval_id}
            )
            return 0
        if record.status != PENDING:
            # Settled before its token arrived (the API resumed the thread, or it was
            # deleted): complete the execution, which then ends without a resume.
            _complete(task_token, record, record.status)
            return 0
        self.records.set_task_token(approval_id, task_token)
        sent = 0
        for reviewer in record.reviewers:
            if reviewer in record.emailed:
                continue  # a duplicate delivery of the token message
            subject, text, html = render_email(record, self.link(record, reviewer))
            clients.send_email(self.settings.approval_sender, reviewer, subject, text, html)
            self.records.mark_emailed(approval_id, reviewer)
            sent += 1
        logger.info("approval notified", extra={"approval_id": approval_id, "emails": sent})
        return sent

    # --- 3. decide (the page) ----------------------------------------------------------

    def view(self, approval_id: str, token: str | None) -> tuple[ApprovalRecord, str]:
        """The approval a link opens, and its reviewer; raises 403/404/409/410. Reads only."""
        claims = self._verify(approval_id, token)
        record = self.records.get(approval_id)
        if record is None:
            raise NotFoundError("This approval request no longer exists.")
        self._check_open(record)
        return record, claims.reviewer

    def _verify(self, approval_id: str, token: str | None) -> tokens.TokenClaims:
        try:
            return tokens.verify(self.signing_key(), token, approval_id, clock.now())
        except tokens.TokenExpired:
            # A decided approval says so even after its link expired.
            record = self.records.get(approval_id)
            if record is not None and record.status in ("approved", "rejected", "cancelled"):
                # Signature already checked: only the expiry failed.
                raise AlreadyDecided(record) from None
            raise

    def _check_open(self, record: ApprovalRecord) -> None:
        if record.status == "expired" or (
            record.status == PENDING and clock.now() >= record.expires_at
        ):
            raise tokens.TokenExpired(
                "This approval request has expired; the run was resumed without a decision."
            )
        if record.status != PENDING:
            raise AlreadyDecided(record)

    def decide(
        self, approval_id: str, token: str | None, decision: Any, comment: str | None
    ) -> ApprovalRecord:
        """Settle the approval once with the reviewer's decision; raises 403/404/409/410/422."""
        record, reviewer = self.view(approval_id, token)
        choice = parse_decision(decision)
        value = resume_value(choice, reviewer, comment or None, now_iso())
        if not self.records.settle(record, _STATUS_OF[choice], value, "link"):
            current = self.records.get(approval_id) or record
            raise AlreadyDecided(current)
        logger.info("approval decided", extra={"approval_id": approval_id, "decision": choice})
        settled = self.records.get(approval_id) or record
        self._hand_back(settled, value)
        return settled

    def _hand_back(self, record: ApprovalRecord, value: dict[str, Any]) -> None:
        """The decision to the waiting execution, which sends the resume message; without
        an execution waiting (none configured, or no token yet), resume here."""
        if self.settings.approval_state_machine_arn and record.task_token:
            try:
                clients.send_task_success(record.task_token, value)
                return
            except clients.TaskGone:
                # It timed out meanwhile: its expiry resume reads the recorded decision.
                logger.warning(
                    "execution no longer waiting", extra={"approval_id": record.approval_id}
                )
                return
        # Its token message, when it comes, completes the execution (``notify``).
        self.resume_run(record)

    # --- 4. resume (the resume message) ------------------------------------------------

    def on_resume(self, approval_id: str, decision: dict[str, Any]) -> str | None:
        """Resume the thread after the execution ended; the resuming run's id (None if
        nothing is to be resumed). A decision recorded before wins over an expiry."""
        record = self.records.get(approval_id)
        if record is None:
            logger.warning("resume for an unknown approval", extra={"approval_id": approval_id})
            return None
        if record.status == PENDING:
            choice = decision.get("decision") if isinstance(decision, dict) else None
            status = _STATUS_OF.get(str(choice), "expired")
            self.records.settle(
                record, status, decision, "timeout" if status == "expired" else "link"
            )
            record = self.records.get(approval_id) or record
        if record.source == "api" or record.status == "cancelled":
            return None  # the API's own run resumed it, or the thread was cancelled
        return self.resume_run(record)

    def resume_run(self, record: ApprovalRecord) -> str | None:
        from functions.api_models import RunCommand, RunCreate

        if record.resumed_run_id:
            return record.resumed_run_id
        # A resume message handled twice (or a crash after the run was created) finds its run.
        for run in self.runs.store.list_runs(record.thread_id):
            if run.metadata.get("approval_id") == record.approval_id:
                self.records.set_resumed(record.approval_id, run.run_id)
                return run.run_id
        body = RunCreate(
            assistant_id=record.assistant_id,
            command=RunCommand(resume={record.interrupt_id: record.decision}),
            metadata={"approval_id": record.approval_id},
            multitask_strategy="enqueue",
        )
        try:
            run = self.runs.create(record.tenant, record.thread_id, body)
        except NotFoundError:
            logger.warning("approval's thread is gone", extra={"approval_id": record.approval_id})
            return None
        self.records.set_resumed(record.approval_id, run.run_id)
        logger.info(
            "approval resumed", extra={"approval_id": record.approval_id, "run_id": run.run_id}
        )
        return run.run_id

    # --- the API's ways ----------------------------------------------------------------

    def settle_by_api(self, thread_id: str, resume: Any, run_id: str) -> None:
        """A client resumed the thread itself: its pending approvals are settled (source
        ``api``) and their executions completed (no resume follows), so the emailed links say
        "already decided"."""
        for record in self.records.for_thread(thread_id):
            if record.status != PENDING:
                continue
            value = resume.get(record.interrupt_id, resume) if isinstance(resume, dict) else resume
            approved = _approved(value)
            decision = resume_value("approve" if approved else "reject", None, None, now_iso())
            decision["value"] = value
            if self.records.settle(record, "approved" if approved else "rejected", decision, "api"):
                self.records.set_resumed(record.approval_id, run_id)
                _complete(record.task_token, record, "approved" if approved else "rejected")

    def cancel_for_run(self, run: RunRecord) -> int:
        """The run that stopped for approval was cancelled (``POST .../cancel``): its pending
        approvals are cancelled and their executions completed without a resume, so the
        emailed links say "already decided: cancelled"; how many were cancelled.

        The cancel may come while the run's ending is still under way (the approval being
        stored or its execution started): the records are then stored here first, so that
        the start, when it comes, finds them cancelled and starts nothing. An execution that
        was started all the same ends when its token arrives (``notify``)."""
        if run.ending is not None and "approval" in run.ending.effects:
            for record in self._records_for(run, run.ending):
                self.records.put_if_absent(record)
        mine = [r for r in self.records.for_thread(run.thread_id) if r.run_id == run.run_id]
        cancelled = _cancel_pending(self.records, mine)
        if cancelled:
            logger.info("approvals cancelled", extra={"run_id": run.run_id, "count": cancelled})
        return cancelled

    def list_thread(self, tenant: str, thread_id: str) -> list[dict[str, Any]]:
        self.runs.thread_for(tenant, thread_id)
        return [r.to_api() for r in self.records.for_thread(thread_id) if r.tenant == tenant]

    def list_tenant(self, tenant: str, status: str | None) -> list[dict[str, Any]]:
        return [r.to_api() for r in self.records.for_tenant(tenant, status)]


def stop_thread_approvals(settings: Settings, thread_id: str) -> None:
    """The thread is being deleted: its pending approvals are cancelled and their
    executions completed without a resume (their links then say "already decided: cancelled")."""
    records = ApprovalRecords(settings.runtime_table)
    _cancel_pending(records, records.for_thread(thread_id))


def _cancel_pending(records: ApprovalRecords, candidates: list[ApprovalRecord]) -> int:
    """Cancel those still pending (once: the conditional write) and complete their
    executions without a resume; how many this call cancelled."""
    cancelled = 0
    for record in candidates:
        if record.status == PENDING and records.settle(
            record, "cancelled", {"decision": "cancelled", "decided_at": now_iso()}, "api"
        ):
            _complete(record.task_token, record, "cancelled")
            cancelled += 1
    return cancelled


def _complete(task_token: str | None, record: ApprovalRecord, status: str) -> None:
    """End a settled approval's waiting execution (``settled``: no resume follows). Without
    a token yet, its token message does it (``notify``)."""
    if not task_token:
        return
    try:
        clients.send_task_success(task_token, {"settled": True, "status": status})
    except clients.TaskGone:
        pass  # it ended already (timed out): its resume message changes nothing now
    except InfrastructureError:
        # Settled anyway: the execution's later messages change nothing (``on_resume``).
        logger.warning("execution not completed", extra={"approval_id": record.approval_id})


def _approved(value: Any) -> bool:
    if isinstance(value, dict):
        return bool(value.get("approved", value.get("decision") == "approve"))
    if isinstance(value, str):
        return value.strip().lower() in {"yes", "y", "approve", "approved", "true"}
    return bool(value)

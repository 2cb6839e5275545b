"""Approval notifier Lambda: approval-requests queue (SQS) in, ``{"batchItemFailures"}`` out.

Two kinds of message, both from the approval state machine: ``request`` (its task token:
email the reviewers) and ``resume`` (the decision, or the expiry: resume the thread). A
message that fails is retried by SQS and parked in the DLQ after ``maxReceiveCount``.
Message bodies carry task tokens: they are never logged.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions.approvals.service import ApprovalService
from functions.runs import RunService
from functions.settings import get_settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()

_service: ApprovalService | None = None


def default_service() -> ApprovalService:
    global _service
    if _service is None:
        _service = ApprovalService(RunService.from_settings(get_settings()))
    return _service


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(
    event: dict[str, Any], context: Any, service: ApprovalService | None = None
) -> dict[str, Any]:
    approvals = service or default_service()
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> str:
        message = json.loads(record.body)
        kind = message.get("kind")
        approval_id = str(message.get("approval_id", ""))
        if kind == "request":
            sent = approvals.notify(approval_id, str(message["task_token"]))
            metrics.add_metric(name="ApprovalEmailsSent", unit=MetricUnit.Count, value=sent)
            return "notified"
        if kind == "resume":
            approvals.on_resume(approval_id, message.get("decision") or {})
            metrics.add_metric(name="ApprovalsResumed", unit=MetricUnit.Count, value=1)
            return "resumed"
        logger.warning("unknown approval message kind", extra={"kind": str(kind)[:40]})
        return "ignored"

    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )

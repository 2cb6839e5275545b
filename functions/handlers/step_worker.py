"""Step worker Lambda: SQS event in, ``{"batchItemFailures": [...]}`` out.

One superstep per message (``functions.steps``). Infrastructure errors fail only that record,
so SQS redelivers it (and parks it in the DLQ after ``maxReceiveCount``).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions.queues import StepMessage
from functions.release_metrics import function_version
from functions.runs import RunService
from functions.settings import get_settings
from functions.steps import Delivery, StepWorker

logger = Logger()
tracer = Tracer()
metrics = Metrics()

_worker: StepWorker | None = None


def default_worker() -> StepWorker:
    global _worker
    if _worker is None:
        _worker = StepWorker(RunService.from_settings(get_settings()))
    return _worker


def _priority_of(record: SQSRecord, message: StepMessage) -> str:
    # The queue a message came from is its priority; the body says the same.
    arn = record.event_source_arn or ""
    for priority in ("high", "normal", "low"):
        if arn.lower().endswith(priority):
            return priority
    return message.priority


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(
    event: dict[str, Any], context: Any, worker: StepWorker | None = None
) -> dict[str, Any]:
    step_worker = worker or default_worker()
    # Report every failed record, even when all failed, instead of raising: same effect on
    # SQS, and the local pollers read one contract.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord) -> str:
        message = StepMessage.from_json(record.body)
        logger.thread_safe_clear_keys()
        logger.thread_safe_append_keys(priority=_priority_of(record, message))
        attributes = record.attributes
        delivery = Delivery(
            receive_count=int(attributes.approximate_receive_count or 1),
            sent_at_ms=int(attributes.sent_timestamp) if attributes.sent_timestamp else None,
            receipt_handle=record.receipt_handle,
            version=function_version(context),
        )
        outcome = step_worker.process(message, delivery)
        logger.info("step handled", extra={"outcome": outcome})
        return outcome

    try:
        return dict(
            process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
        )
    finally:
        if step_worker.settings.langsmith_tracing:
            # LangSmith sends traces from a background thread; Lambda freezes the process
            # when the handler returns, so they are sent before it does.
            from langchain_core.tracers.langchain import wait_for_all_tracers

            wait_for_all_tracers()

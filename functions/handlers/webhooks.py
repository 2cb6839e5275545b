"""Webhook sender Lambda: SQS event (run-ended events routed by the bus rule) in,
``{"batchItemFailures": [...]}`` out.

A delivery to retry stays on the queue: its visibility is set to the retry delay and the
record is reported failed, so SQS hands it back then (no function sleeps). A record whose
handling raised is reported failed too and comes back after the queue's visibility timeout.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

from functions.settings import get_settings
from functions.webhooks.sender import WebhookSender

logger = Logger()
tracer = Tracer()
metrics = Metrics()

_sender: WebhookSender | None = None


def default_sender() -> WebhookSender:
    global _sender
    if _sender is None:
        _sender = WebhookSender(get_settings())
    return _sender


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(
    event: dict[str, Any], context: Any, sender: WebhookSender | None = None
) -> dict[str, Any]:
    webhook_sender = sender or default_sender()
    failures: list[dict[str, str]] = []
    for record in event.get("Records") or []:
        message_id = str(record["messageId"])
        try:
            step = webhook_sender.handle(str(record["body"]))
            if step.retry_after_s is not None:
                webhook_sender.queue.retry_later(str(record["receiptHandle"]), step.retry_after_s)
                failures.append({"itemIdentifier": message_id})
        except Exception:
            logger.exception("webhook delivery failed", extra={"message_id": message_id})
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}

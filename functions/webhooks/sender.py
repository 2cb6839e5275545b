"""The webhook sender: one run-ended event (as the deliveries queue carries it) in, one
signed POST out, and what to do next.

A 2xx is delivered. ``410 Gone`` stops (the receiver asked for no more). Anything else, a
timeout (10 s) or a connection error is retried after the next of
``LAMBDAGRAPH_WEBHOOK_RETRY_DELAYS``: the handler leaves the message on the queue with that
visibility timeout, so no function sleeps. After the last delay's attempt fails the delivery
is marked ``failed`` and its message goes to the DLQ. Every attempt carries the same
``webhook-id`` (``run_<run_id>``), so receivers de-duplicate.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from functions import aws
from functions.errors import InfrastructureError, InvalidRequestError
from functions.jsonable import dumps
from functions.resources import WEBHOOK_HTTP_TIMEOUT_S
from functions.settings import Settings
from functions.store import Store, now_iso
from functions.webhooks import records
from functions.webhooks.records import DeliveryStore
from functions.webhooks.signing import active_secrets, signed_headers
from functions.webhooks.urls import WebhookTarget, check_webhook_url

logger = Logger(child=True)
metrics = Metrics()

RESPONSE_KEPT_BYTES = 1024
# SQS: a message's visibility can reach at most 12 hours after it was received.
MAX_VISIBILITY_S = 12 * 3600 - 60
# Another sender's attempt holds the delivery this long (longer than the function timeout).
HOLD_S = 60


def retry_delays(settings: Settings) -> tuple[int, ...]:
    """``LAMBDAGRAPH_WEBHOOK_RETRY_DELAYS`` as seconds; ValueError if malformed."""
    try:
        delays = tuple(int(part) for part in settings.webhook_retry_delays.split(",") if part)
    except ValueError as exc:
        raise ValueError(
            "LAMBDAGRAPH_WEBHOOK_RETRY_DELAYS must be comma-separated whole seconds"
        ) from exc
    if any(d < 0 for d in delays):
        raise ValueError("LAMBDAGRAPH_WEBHOOK_RETRY_DELAYS must not be negative")
    return delays


def webhook_id(run_id: str) -> str:
    return f"run_{run_id}"


@dataclass(frozen=True)
class Next:
    """What the handler does with the message: ``retry_after_s`` None = delete it."""

    retry_after_s: int | None = None


class DeliveryQueue:
    """The deliveries queue's calls the sender makes itself (the rest is the event source's)."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.webhook_queue_url
        self.dlq_url = settings.webhook_dlq_url

    def retry_later(self, receipt_handle: str, delay_s: int) -> None:
        self._call(
            "ChangeMessageVisibility",
            QueueUrl=self.url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=min(delay_s, MAX_VISIBILITY_S),
        )

    def park(self, body: str) -> None:
        self._call("SendMessage", QueueUrl=self.dlq_url, MessageBody=body)

    def _call(self, operation: str, **kwargs: Any) -> None:
        client = aws.sqs_client()
        method = client.change_message_visibility
        if operation == "SendMessage":
            method = client.send_message
        try:
            method(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise InfrastructureError(f"SQS {operation} failed: {exc}") from exc


class WebhookSender:
    def __init__(
        self,
        settings: Settings,
        *,
        deliveries: DeliveryStore | None = None,
        store: Store | None = None,
        queue: DeliveryQueue | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.delays = retry_delays(settings)
        self.deliveries = deliveries or DeliveryStore(
            settings.runtime_table, ttl_days=settings.ttl_days
        )
        self.store = store or Store(settings.runtime_table, ttl_days=settings.ttl_days)
        self.queue = queue or DeliveryQueue(settings)
        self.http = http or httpx.Client(
            timeout=WEBHOOK_HTTP_TIMEOUT_S, follow_redirects=False, trust_env=False
        )

    def handle(self, body: str) -> Next:
        """Deliver the event in ``body`` (an EventBridge event, as the rule's SQS target
        sends it): what to do with its message."""
        event = json.loads(body)
        detail = event.get("detail", event)
        run_id, thread_id = str(detail["run_id"]), str(detail["thread_id"])
        url = str(detail.get("webhook") or "")
        if not url:
            return Next()
        wid = webhook_id(run_id)
        attempt = self.deliveries.begin_attempt(
            thread_id, run_id, url=url, webhook_id=wid, hold_until=time.time() + HOLD_S
        )
        if attempt is None:
            logger.info("webhook already delivered or in progress", extra={"run_id": run_id})
            return Next()
        metrics.add_metric(name="WebhookAttempts", unit=MetricUnit.Count, value=1)
        record, code = self._attempt(attempt, wid, url, detail)
        last = attempt > len(self.delays)
        if code is not None and 200 <= code < 300:
            status = records.DELIVERED
        elif code == 410:
            status = records.GONE
        elif record.get("refused") or last:
            status = records.FAILED
        else:
            status = records.PENDING
        delivered_at = record["at"] if status == records.DELIVERED else None
        self.deliveries.finish_attempt(
            thread_id, run_id, record, status=status, delivered_at=delivered_at
        )
        extra = {"run_id": run_id, "attempt": attempt, "status_code": code, "outcome": status}
        if status == records.PENDING:
            delay = self.delays[attempt - 1]
            logger.info("webhook attempt failed; retrying", extra={**extra, "delay_s": delay})
            return Next(retry_after_s=delay)
        metrics.add_metric(name=f"Webhooks{status.capitalize()}", unit=MetricUnit.Count, value=1)
        if status == records.DELIVERED:
            latency = _seconds_since(detail.get("run_ended_at"))
            if latency is not None:
                metrics.add_metric(
                    name="WebhookDeliveryLatency",
                    unit=MetricUnit.Milliseconds,
                    value=latency * 1000,
                )
            logger.info("webhook delivered", extra=extra)
        elif status == records.FAILED and not record.get("refused"):
            logger.warning("webhook failed after its last attempt: parked in the DLQ", extra=extra)
            self.queue.park(body)
        else:
            logger.warning("webhook delivery stopped", extra=extra)
        return Next()

    def _attempt(
        self, attempt: int, wid: str, url: str, detail: dict[str, Any]
    ) -> tuple[dict[str, Any], int | None]:
        sent_at = now_iso()
        record: dict[str, Any] = {
            "attempt": attempt,
            "at": sent_at,
            "status_code": None,
            "latency_ms": None,
            "error": None,
            "response": None,
        }
        try:
            # Checked again: DNS may have changed since the run was created.
            target = check_webhook_url(url, self.settings)
        except InvalidRequestError as exc:
            record.update(error=str(exc), refused=True)
            return record, None
        body = dumps(self._payload(detail, sent_at))
        headers = {
            "content-type": "application/json",
            "user-agent": "lambdagraph-webhooks",
            **signed_headers(wid, body, active_secrets(self.settings)),
        }
        started = time.monotonic()
        try:
            response = self._post(target, body, headers)
        except httpx.HTTPError as exc:
            record.update(
                latency_ms=int((time.monotonic() - started) * 1000),
                error=f"{type(exc).__name__}: {exc}"[:500],
            )
            return record, None
        record.update(
            status_code=response.status_code,
            latency_ms=int((time.monotonic() - started) * 1000),
            response=response.content[:RESPONSE_KEPT_BYTES].decode("utf-8", "replace"),
        )
        if not 200 <= response.status_code < 300:
            record["error"] = f"HTTP {response.status_code}"
        return record, response.status_code

    def _post(self, target: WebhookTarget, body: str, headers: dict[str, str]) -> httpx.Response:
        """POST to the address that was checked (not a fresh lookup), with the URL's host
        as Host and TLS server name."""
        url = httpx.URL(target.url)
        extensions: dict[str, Any] = {}
        if target.address and target.address != target.host:
            ip = f"[{target.address}]" if ":" in target.address else target.address
            headers = {**headers, "host": url.netloc.decode("ascii")}
            extensions["sni_hostname"] = target.host
            url = url.copy_with(host=ip.strip("[]"))
        return self.http.post(url, content=body.encode(), headers=headers, extensions=extensions)

    def _payload(self, detail: dict[str, Any], sent_at: str) -> dict[str, Any]:
        values = detail.get("values")
        if detail.get("values_omitted"):
            run = self.store.get_run(str(detail["thread_id"]), str(detail["run_id"]))
            values = run.values if run is not None else None
            if isinstance(values, dict):
                values = {k: v for k, v in values.items() if k != "__interrupt__"}
        return {
            **detail["run"],
            "values": values,
            "error": detail.get("error"),
            "run_started_at": detail.get("run_started_at"),
            "run_ended_at": detail.get("run_ended_at"),
            "webhook_sent_at": sent_at,
            "thread_status": detail.get("thread_status"),
            "interrupts": detail.get("interrupts") or {},
        }


def _seconds_since(iso: Any) -> float | None:
    if not isinstance(iso, str) or not iso:
        return None
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - then).total_seconds())

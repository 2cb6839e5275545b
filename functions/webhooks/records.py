"""Delivery records: one item per run (``THREAD#<tid>`` / ``WEBHOOK#<rid>`` in the runtime
table) with the delivery's status and every attempt. The record is also what makes a run's
delivery happen once: an attempt starts only on a pending record that no other sender holds,
so a run-ended event put twice (an ending finished twice) or delivered twice by SQS sends
nothing more once the run's webhook is delivered."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions import aws
from functions.errors import InfrastructureError

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
GONE = "gone"
FINAL_STATUSES = (DELIVERED, FAILED, GONE)


def _key(thread_id: str, run_id: str) -> dict[str, str]:
    return {"pk": f"THREAD#{thread_id}", "sk": f"WEBHOOK#{run_id}"}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class Delivery:
    run_id: str
    thread_id: str
    webhook_id: str
    url: str
    status: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    delivered_at: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "webhook_id": self.webhook_id,
            "url": self.url,
            "status": self.status,
            "delivered_at": self.delivered_at,
            "attempts": self.attempts,
        }


class DeliveryStore:
    def __init__(self, table_name: str, *, ttl_days: int = 0) -> None:
        self._table = aws.table(table_name)
        self._ttl_days = ttl_days

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc

    def begin_attempt(
        self, thread_id: str, run_id: str, *, url: str, webhook_id: str, hold_until: float
    ) -> int | None:
        """Start the next attempt: its number, or None if the delivery is over (delivered,
        failed, gone) or another sender's attempt is in progress (until its hold passes)."""
        now = time.time()
        sets = [
            "#url = if_not_exists(#url, :url)",
            "webhook_id = if_not_exists(webhook_id, :wid)",
            "#st = if_not_exists(#st, :pending)",
            "hold_until = :hold",
        ]
        values: dict[str, Any] = {
            ":url": url,
            ":wid": webhook_id,
            ":pending": PENDING,
            ":hold": Decimal(str(round(hold_until, 3))),
            ":now": Decimal(str(round(now, 3))),
            ":one": 1,
        }
        if self._ttl_days:
            sets.append("#ttl = :ttl")
            values[":ttl"] = int(now + self._ttl_days * 86400)
        try:
            response = self._call(
                self._table.update_item,
                Key=_key(thread_id, run_id),
                UpdateExpression="SET " + ", ".join(sets) + " ADD attempt_count :one",
                ConditionExpression=(
                    "attribute_not_exists(pk) OR "
                    "(#st = :pending AND (attribute_not_exists(hold_until) OR hold_until < :now))"
                ),
                ExpressionAttributeNames={
                    "#url": "url",
                    "#st": "status",
                    **({"#ttl": "ttl"} if self._ttl_days else {}),
                },
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        except ClientError:
            return None  # the condition failed: over, or in progress elsewhere
        return int(response["Attributes"]["attempt_count"])

    def finish_attempt(
        self,
        thread_id: str,
        run_id: str,
        attempt: dict[str, Any],
        *,
        status: str,
        delivered_at: str | None = None,
    ) -> None:
        """Record an attempt and the delivery's status after it; release the hold."""
        sets = ["#st = :st", "attempt_log = list_append(if_not_exists(attempt_log, :empty), :a)"]
        values: dict[str, Any] = {":st": status, ":a": [attempt], ":empty": []}
        if delivered_at is not None:
            sets.append("delivered_at = :d")
            values[":d"] = delivered_at
        self._call(
            self._table.update_item,
            Key=_key(thread_id, run_id),
            UpdateExpression="SET " + ", ".join(sets) + " REMOVE hold_until",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=values,
        )

    def get(self, thread_id: str, run_id: str) -> Delivery | None:
        response = self._call(
            self._table.get_item, Key=_key(thread_id, run_id), ConsistentRead=True
        )
        item = response.get("Item")
        if item is None:
            return None
        item = _plain(item)
        return Delivery(
            run_id=run_id,
            thread_id=thread_id,
            webhook_id=str(item.get("webhook_id", "")),
            url=str(item.get("url", "")),
            status=str(item.get("status", PENDING)),
            attempts=list(item.get("attempt_log") or []),
            delivered_at=item.get("delivered_at"),
        )

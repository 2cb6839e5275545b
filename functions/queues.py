"""Step messages on the three priority queues."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions import aws
from functions.errors import InfrastructureError
from functions.resources import Priority
from functions.settings import Settings

# SQS caps DelaySeconds at 15 minutes.
MAX_DELAY_S = 900


@dataclass(frozen=True)
class StepMessage:
    """Run ``run_id``'s step number ``step`` (1-based), expected to start from ``checkpoint_id``."""

    run_id: str
    thread_id: str
    step: int
    priority: Priority
    checkpoint_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str) -> StepMessage:
        data: dict[str, Any] = json.loads(body)
        return cls(
            run_id=str(data["run_id"]),
            thread_id=str(data["thread_id"]),
            step=int(data["step"]),
            priority=data.get("priority", "normal"),
            checkpoint_id=data.get("checkpoint_id"),
        )


class StepQueues:
    def __init__(self, settings: Settings) -> None:
        self._urls: dict[str, str] = {
            "high": settings.queue_url_high,
            "normal": settings.queue_url_normal,
            "low": settings.queue_url_low,
        }

    def send(self, message: StepMessage, *, delay_s: int = 0) -> None:
        url = self._urls.get(message.priority) or self._urls["normal"]
        if not url:
            raise InfrastructureError(f"no queue URL configured for priority {message.priority!r}")
        kwargs: dict[str, Any] = {"QueueUrl": url, "MessageBody": message.to_json()}
        if delay_s > 0:
            kwargs["DelaySeconds"] = min(delay_s, MAX_DELAY_S)
        try:
            aws.sqs_client().send_message(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise InfrastructureError(f"SQS send_message failed: {exc}") from exc

    def extend_visibility(self, priority: str, receipt_handle: str, seconds: int) -> None:
        """Keep a message a live worker holds from coming back (the step heartbeat)."""
        url = self._urls.get(priority) or self._urls["normal"]
        try:
            aws.sqs_client().change_message_visibility(
                QueueUrl=url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )
        except (ClientError, BotoCoreError) as exc:
            raise InfrastructureError(f"SQS change_message_visibility failed: {exc}") from exc

"""The per-run event log in the runtime table: the only module of streams that talks to AWS.

| item         | pk                 | sk                                   |
|--------------|--------------------|--------------------------------------|
| event batch  | ``STREAM#<run_id>``| ``<step:08d>#<attempt:04d>#<first:06d>`` |

An item holds a batch of consecutive events of one step: ``events`` is a JSON list of
``[name, data]`` (``data`` the event's single-line JSON text), ``first`` the index in the
step of its first event. Events are numbered per step (``<step>-<index>``, the SSE id), so a
retried step numbers its events as the crashed attempt did: its items sort after the crashed
attempt's, and a reader skips every event whose id it has already passed. Each event is thus
read once whichever attempts wrote it (see docs/streaming.md). Items expire after a day.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError

from functions import aws, clock
from functions.errors import InfrastructureError

LOG_TTL_S = 24 * 3600
# Characters of a batch's JSON per item: under DynamoDB's 400 KB with the item's other fields.
PART_CHARS = 300_000
_PK = "STREAM#"


@dataclass(frozen=True, order=True)
class Cursor:
    """An event's place in a run's stream: its step and its index in the step."""

    step: int
    index: int

    def __str__(self) -> str:
        return f"{self.step}-{self.index}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor an SSE id names; ValueError when it is not one."""
        step, _, index = text.strip().partition("-")
        if not (step.isdigit() and index.isdigit()):
            raise ValueError(f"Last-Event-ID {text!r} is not an event id of this stream")
        return cls(int(step), int(index))


# The metadata event comes before every event of the run (steps count from 1).
START = Cursor(0, 0)


@dataclass(frozen=True)
class Event:
    cursor: Cursor
    name: str
    data: str


@dataclass(frozen=True)
class Batch:
    sort_key: str
    events: list[Event]


def sort_key(step: int, attempt: int, first: int) -> str:
    return f"{step:08d}#{attempt:04d}#{first:06d}"


class StreamLog:
    def __init__(self, table_name: str) -> None:
        self._table = aws.table(table_name)

    def put(
        self, run_id: str, step: int, attempt: int, first: int, events: list[tuple[str, str]]
    ) -> None:
        """Write one batch; the same key again (a re-flush) overwrites it.

        A batch too large for one item (an event of large values: an item is at most 400 KB)
        is written in parts, ``<key>#p000``, ``<key>#p001``, ... each saying how many there
        are; a reader takes the batch once it has every part."""
        text = json.dumps(events, separators=(",", ":"))
        key = sort_key(step, attempt, first)
        if len(text) <= PART_CHARS:
            self._write(run_id, key, step, first, {"events": text})
            return
        parts = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)]
        for index, part in enumerate(parts):
            self._write(
                run_id,
                f"{key}#p{index:03d}",
                step,
                first,
                {"part": part, "part_index": index, "parts": len(parts)},
            )

    def _write(self, run_id: str, key: str, step: int, first: int, data: dict[str, Any]) -> None:
        # An update, not a put: the same effect, and the worker's role already has it.
        values = {"step": step, "first": first, **data, "ttl": int(clock.now()) + LOG_TTL_S}
        try:
            self._table.update_item(
                Key={"pk": _PK + run_id, "sk": key},
                UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values),
                ExpressionAttributeNames={f"#{k}": k for k in values},
                ExpressionAttributeValues={f":{k}": v for k, v in values.items()},
            )
        except (ClientError, BotoCoreError) as exc:
            raise InfrastructureError(f"DynamoDB update_item failed: {exc}") from exc

    def read(self, run_id: str, *, after_key: str | None = None, from_step: int = 0) -> list[Batch]:
        """Batches past ``after_key`` (exclusive), or from the start of ``from_step``."""
        condition: Any = Key("pk").eq(_PK + run_id)
        if after_key is not None:
            condition = condition & Key("sk").gt(after_key)
        elif from_step:
            condition = condition & Key("sk").gte(f"{from_step:08d}#")
        batches: list[Batch] = []
        parts: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": condition, "ConsistentRead": True}
        try:
            while True:
                page = self._table.query(**kwargs)
                for item in page.get("Items", []):
                    if "part" not in item:
                        parts = []
                        batches.append(_batch(item))
                        continue
                    # A batch written in parts: whole once its last part is read (a batch
                    # still being written is left for the next read).
                    if int(item["part_index"]) != len(parts):
                        parts = []
                        if int(item["part_index"]) != 0:
                            continue
                    parts.append(item)
                    if len(parts) == int(item["parts"]):
                        text = "".join(str(p["part"]) for p in parts)
                        batches.append(_batch({**item, "events": text}))
                        parts = []
                if "LastEvaluatedKey" not in page:
                    return batches
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise InfrastructureError(f"DynamoDB query failed: {exc}") from exc

    def step_events(self, run_id: str, step: int) -> list[Event]:
        """The events of ``step`` as a reader sees them, whichever attempts wrote them."""
        events: list[Event] = []
        last: Cursor | None = None
        for batch in self.read(run_id, from_step=step):
            for event in batch.events:
                if event.cursor.step != step or (last is not None and event.cursor <= last):
                    continue
                events.append(event)
                last = event.cursor
        return events


def _batch(item: dict[str, Any]) -> Batch:
    step, first = int(item["step"]), int(item["first"])
    raw = json.loads(item["events"])
    events = [Event(Cursor(step, first + i), name, data) for i, (name, data) in enumerate(raw)]
    return Batch(str(item["sk"]), events)

"""The run-ended event: put on the lambdagraph EventBridge bus by the ending of every run.

It is one effect of the durable run ending (``functions.runs``, effect ``event``). EventBridge
has no idempotency token, so an ending finished twice (its process died after ``PutEvents``)
puts the event twice; everything downstream de-duplicates by run: the webhook sender through
its delivery record, other consumers by ``detail.run.run_id``.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions import aws
from functions.errors import InfrastructureError
from functions.jsonable import dumps
from functions.resources import RUN_ENDED_DETAIL_TYPE, RUN_EVENTS_SOURCE
from functions.store import Ending, RunRecord

# EventBridge events are at most 256 KB; larger final values are left out of the event
# (``values_omitted``) and read from the run record by whoever needs them.
MAX_VALUES_IN_EVENT = 180_000


def run_ended_detail(run: RunRecord, ending: Ending, ended_at: str) -> dict[str, Any]:
    """The event's ``detail``: the Run, its final values and error, the thread's status and
    interrupts, and ``webhook`` (only present when the run asked for one: the rule filters on
    it)."""
    values = run.values
    if isinstance(values, dict):
        # The interrupts have their own field.
        values = {k: v for k, v in values.items() if k != "__interrupt__"}
    detail: dict[str, Any] = {
        "run": run.to_api(),
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "tenant": run.tenant,
        "status": run.status,
        "values": values,
        "error": run.error,
        "thread_status": ending.thread_status,
        "interrupts": ending.interrupts,
        "run_started_at": run.created_at,
        "run_ended_at": ended_at,
        # Model tokens and cost (docs/models.md); top level so rules can match on them.
        "usage": run.usage or None,
    }
    if values is not None and len(dumps(values)) > MAX_VALUES_IN_EVENT:
        detail["values"] = None
        detail["values_omitted"] = True
    webhook = (run.kwargs or {}).get("webhook")
    if webhook:
        detail["webhook"] = str(webhook)
    return detail


class RunEvents:
    """Puts run-ended events on the bus named by ``event_bus_name``."""

    def __init__(self, bus_name: str) -> None:
        self.bus_name = bus_name

    def put_run_ended(self, run: RunRecord, ending: Ending, ended_at: str) -> None:
        entry = {
            "Source": RUN_EVENTS_SOURCE,
            "DetailType": RUN_ENDED_DETAIL_TYPE,
            "Detail": dumps(run_ended_detail(run, ending, ended_at)),
            "EventBusName": self.bus_name,
            "Resources": [],
        }
        try:
            response = aws.events_client().put_events(Entries=[entry])
        except (BotoCoreError, ClientError) as exc:
            raise InfrastructureError(f"EventBridge PutEvents failed: {exc}") from exc
        if response.get("FailedEntryCount"):
            failure = (response.get("Entries") or [{}])[0]
            raise InfrastructureError(
                "EventBridge refused the run-ended event: "
                f"{failure.get('ErrorCode')} {failure.get('ErrorMessage')}"
            )

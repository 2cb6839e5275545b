"""``GET /threads/{tid}/runs/{rid}/webhooks``: a run's webhook delivery and its attempts."""

from __future__ import annotations

from typing import Any

from functions.runs import RunService
from functions.webhooks.records import DeliveryStore
from functions.webhooks.sender import webhook_id


def run_webhooks(runs: RunService, tenant: str, thread_id: str, run_id: str) -> dict[str, Any]:
    """The delivery of the run's webhook (404 for an unknown run or another tenant's).

    ``status``: ``none`` (the run asked for no webhook), ``pending`` (not delivered yet:
    the run is still going, or attempts are being retried), ``delivered``, ``failed``
    (every attempt failed, or the URL was refused at delivery), ``gone`` (the receiver
    answered 410).
    """
    run = runs.get(tenant, thread_id, run_id)
    url = (run.kwargs or {}).get("webhook")
    delivery = DeliveryStore(runs.settings.runtime_table).get(thread_id, run_id)
    if delivery is not None:
        return delivery.to_api()
    return {
        "run_id": run_id,
        "thread_id": thread_id,
        "webhook_id": webhook_id(run_id) if url else None,
        "url": url,
        "status": "pending" if url else "none",
        "delivered_at": None,
        "attempts": [],
    }

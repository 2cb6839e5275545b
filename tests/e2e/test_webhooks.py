"""Webhooks on the local stack, end to end: a run created through the SDK with a ``webhook``
reaches a real HTTP receiver through moto's EventBridge rule, the deliveries queue, the local
poller and the real sender; the receiver verifies with ``standardwebhooks``."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph_sdk import get_sync_client
from standardwebhooks.webhooks import Webhook

from functions.webhooks.signing import new_secret
from infra.local.stack import LocalStack
from tests.conftest import register_secret
from tests.integration.webhook_receiver import Receiver, webhook_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

BILLING = {"messages": [{"role": "user", "content": "I was charged twice on my invoice"}]}


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = register_secret(new_secret(), "webhook secret (local stack)")
    monkeypatch.setenv("LAMBDAGRAPH_WEBHOOK_SECRET", value)
    monkeypatch.setenv("LAMBDAGRAPH_WEBHOOK_RETRY_DELAYS", "1,1")
    monkeypatch.delenv("LAMBDAGRAPH_API_KEYS", raising=False)
    return value


@pytest.fixture
def local_stack(secret: str) -> Iterator[LocalStack]:
    with LocalStack(port=0, moto_port=0, housekeeping_interval_s=0) as stack:
        yield stack


def _wait(receiver: Receiver, count: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(receiver.received) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_a_run_webhook_is_delivered_signed_and_retried_on_the_local_stack(
    local_stack: LocalStack, secret: str
) -> None:
    client = get_sync_client(url=local_stack.url, api_key="")
    with webhook_receiver(script=[500]) as receiver:
        # GIVEN a receiver failing its first attempt
        thread = client.threads.create()
        # WHEN a run is created through the SDK with a webhook
        run = client.runs.create(
            thread["thread_id"], "support", input=BILLING, webhook=receiver.url
        )
        _wait(receiver, 2)
        # THEN the receiver got two signed POSTs with one webhook-id, the second after the delay
        assert len(receiver.received) == 2
        first, second = receiver.received
        payload = Webhook(secret).verify(second.body, second.headers)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert payload["run_id"] == run["run_id"]
        assert payload["status"] == "success"
        assert payload["thread_status"] == "idle"
        # AND the attempts are readable over HTTP
        url = f"{local_stack.url}/threads/{thread['thread_id']}/runs/{run['run_id']}/webhooks"
        deliveries = _get(url)
        assert deliveries["status"] == "delivered"
        assert [a["status_code"] for a in deliveries["attempts"]] == [500, 200]
        # AND no third POST comes
        time.sleep(1.5)
        assert len(receiver.received) == 2

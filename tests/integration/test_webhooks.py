"""Completion webhooks on moto: run ending -> run-ended event on the bus -> rule -> the
deliveries queue -> the real sender handler -> a real HTTP receiver verifying signatures
with ``standardwebhooks``."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import boto3
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from functions import aws
from functions.handlers import webhooks
from functions.resources import WEBHOOK_QUEUE, WEBHOOK_RULE_PATTERN
from functions.webhooks.sender import WebhookSender
from functions.webhooks.signing import new_secret
from tests.conftest import register_secret
from tests.integration.conftest import KEY_B, LambdaContext, Stack, load_event
from tests.integration.webhook_receiver import Receiver, webhook_receiver

pytestmark = pytest.mark.integration

BILLING = {"messages": [{"role": "user", "content": "I want a refund"}]}
CANCEL = {"messages": [{"role": "user", "content": "Please cancel my account"}]}


class WebhookStack(Stack):
    """The run-path stack plus the lambdagraph bus, its rule and the deliveries queue."""

    def __init__(self, endpoint: str, **overrides: Any) -> None:
        suffix = uuid.uuid4().hex[:10]
        sqs = boto3.client("sqs", endpoint_url=endpoint)
        events = boto3.client("events", endpoint_url=endpoint)
        dlq_url = sqs.create_queue(QueueName=f"webhooks-dlq-{suffix}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=f"webhooks-{suffix}",
            Attributes={
                "VisibilityTimeout": str(WEBHOOK_QUEUE.visibility_timeout_s),
                "RedrivePolicy": json.dumps(
                    {
                        "deadLetterTargetArn": dlq_arn,
                        "maxReceiveCount": WEBHOOK_QUEUE.max_receive_count,
                    }
                ),
            },
        )["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        bus = f"bus-{suffix}"
        events.create_event_bus(Name=bus)
        events.put_rule(
            Name=f"webhooks-{suffix}",
            EventBusName=bus,
            EventPattern=json.dumps(WEBHOOK_RULE_PATTERN),
        )
        events.put_targets(
            Rule=f"webhooks-{suffix}",
            EventBusName=bus,
            Targets=[{"Id": "deliveries", "Arn": queue_arn}],
        )
        self.secret = register_secret(new_secret(), "webhook secret")
        settings: dict[str, Any] = {
            "event_bus_name": bus,
            "webhook_queue_url": queue_url,
            "webhook_dlq_url": dlq_url,
            "webhook_secret": self.secret,
            "webhook_require_https": False,
            "webhook_allow_private": True,
            "webhook_retry_delays": "0,0",
            **overrides,
        }
        super().__init__(endpoint, **settings)
        self.webhook_queue_url = queue_url
        self.webhook_dlq_url = dlq_url
        self.sender = WebhookSender(self.settings)

    def deliver_webhooks(self, limit: int = 20) -> int:
        """Hand the deliveries queue's messages to the sender handler until none is visible."""
        handled = 0
        template = load_event("sqs_step_message.json")["Records"][0]
        while handled < limit:
            messages = self.sqs.receive_message(
                QueueUrl=self.webhook_queue_url, MaxNumberOfMessages=1, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                return handled
            message = messages[0]
            record = {
                **template,
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:webhooks",
            }
            result = webhooks.handler({"Records": [record]}, LambdaContext(), sender=self.sender)
            if not result["batchItemFailures"]:
                self.sqs.delete_message(
                    QueueUrl=self.webhook_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            handled += 1
        raise AssertionError(f"deliveries queue still busy after {limit} messages")

    def dlq_messages(self) -> list[dict[str, Any]]:
        return list(
            self.sqs.receive_message(QueueUrl=self.webhook_dlq_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
        )

    def deliveries(self, thread_id: str, run_id: str, api_key: str | None = None) -> Any:
        kwargs = {} if api_key is None else {"api_key": api_key}
        return self.api("GET", f"/threads/{thread_id}/runs/{run_id}/webhooks", **kwargs)


@pytest.fixture
def make_stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return lambda **overrides: WebhookStack(moto_endpoint, **overrides)


@pytest.fixture
def wstack(make_stack: Any) -> WebhookStack:
    return make_stack()  # type: ignore[no-any-return]


def _run_to_end(stack: WebhookStack, receiver: Receiver, **body: Any) -> tuple[str, str]:
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=body.pop("input", BILLING), webhook=receiver.url, **body)
    stack.pump()
    return thread_id, str(run["run_id"])


# --- delivered, signed ---------------------------------------------------------------------


def test_a_run_that_ends_delivers_one_signed_webhook(wstack: WebhookStack) -> None:
    with webhook_receiver() as receiver:
        # GIVEN a run created with a webhook, run to its end
        thread_id, run_id = _run_to_end(wstack, receiver)

        # WHEN the deliveries queue is handed to the sender
        wstack.deliver_webhooks()

        # THEN the receiver got exactly one POST, signed per Standard Webhooks
        assert len(receiver.received) == 1
        got = receiver.received[0]
        payload = Webhook(wstack.secret).verify(got.body, got.headers)
        assert got.headers["webhook-id"] == f"run_{run_id}"
        # AND the payload is the Run plus the fields LangGraph Platform sends, and ours
        assert payload["run_id"] == run_id
        assert payload["thread_id"] == thread_id
        assert payload["status"] == "success"
        assert payload["kwargs"]["webhook"] == receiver.url
        assert payload["values"]["route"] == "billing:done"
        assert payload["error"] is None
        for stamp in ("run_started_at", "run_ended_at", "webhook_sent_at"):
            assert payload[stamp], stamp
        assert payload["run_started_at"] <= payload["run_ended_at"] <= payload["webhook_sent_at"]
        assert payload["thread_status"] == "idle"
        assert payload["interrupts"] == {}
        # AND a signature made with another secret does not verify
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(got.body, got.headers)
        # AND the attempt is recorded and readable through the API
        reply = wstack.deliveries(thread_id, run_id)
        assert reply.status == 200
        assert reply.body["status"] == "delivered"
        assert reply.body["webhook_id"] == f"run_{run_id}"
        [attempt] = reply.body["attempts"]
        assert attempt["status_code"] == 200
        assert attempt["error"] is None
        assert attempt["latency_ms"] >= 0
        assert json.loads(attempt["response"]) == {"ok": True, "status": 200}
        # AND the run's ending left nothing to finish
        record = wstack.store.get_run(thread_id, run_id)
        assert record is not None
        assert record.ending is None
        # AND nothing is left to deliver
        assert wstack.deliver_webhooks() == 0
        assert len(receiver.received) == 1


def test_several_active_secrets_give_several_signatures(make_stack: Any) -> None:
    old, new = new_secret(), new_secret()
    register_secret(old, "webhook secret (old)")
    register_secret(new, "webhook secret (new)")
    stack = make_stack(webhook_secret=f"{old},{new}")
    with webhook_receiver() as receiver:
        _run_to_end(stack, receiver)
        stack.deliver_webhooks()
        got = receiver.received[0]
        # THEN a receiver holding either secret verifies the delivery
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        Webhook(old).verify(got.body, got.headers)
        Webhook(new).verify(got.body, got.headers)


def test_an_interrupted_run_webhook_carries_the_thread_status_and_interrupts(
    wstack: WebhookStack,
) -> None:
    with webhook_receiver() as receiver:
        # GIVEN a run that stops at interrupt() (an approval request)
        thread_id, run_id = _run_to_end(wstack, receiver, input=CANCEL)
        wstack.deliver_webhooks()
        payload = Webhook(wstack.secret).verify(
            receiver.received[0].body, receiver.received[0].headers
        )
        # THEN the run succeeded, its thread waits, and the interrupt is in the payload
        assert payload["status"] == "success"
        assert payload["thread_status"] == "interrupted"
        [interrupts] = payload["interrupts"].values()
        assert interrupts[0]["value"]["type"] == "approval"
        assert "__interrupt__" not in payload["values"]
        assert payload["run_id"] == run_id
        assert wstack.api("GET", f"/threads/{thread_id}").body["status"] == "interrupted"


def test_a_run_without_a_webhook_puts_an_event_that_is_not_routed(wstack: WebhookStack) -> None:
    thread_id = wstack.create_thread()
    run = wstack.start_run(thread_id, input=BILLING)
    wstack.pump()
    # THEN nothing reaches the deliveries queue, and the API says so
    assert wstack.deliver_webhooks() == 0
    reply = wstack.deliveries(thread_id, run["run_id"])
    assert reply.body["status"] == "none"
    assert reply.body["attempts"] == []


def test_a_cancelled_run_delivers_its_webhook(wstack: WebhookStack) -> None:
    with webhook_receiver() as receiver:
        # GIVEN a run created with a webhook, cancelled before its first step
        thread_id = wstack.create_thread()
        run = wstack.start_run(thread_id, input=BILLING, webhook=receiver.url)
        reply = wstack.api("POST", f"/threads/{thread_id}/runs/{run['run_id']}/cancel")
        assert reply.status in (200, 202, 204)
        wstack.pump()
        wstack.deliver_webhooks()
        # THEN its webhook says so
        [got] = receiver.received
        assert got.payload["status"] == "interrupted"


# --- retries ---------------------------------------------------------------------------------


def test_a_receiver_failing_twice_gets_three_attempts_with_one_webhook_id(
    wstack: WebhookStack,
) -> None:
    with webhook_receiver(script=[500, 503]) as receiver:
        thread_id, run_id = _run_to_end(wstack, receiver)
        wstack.deliver_webhooks()
        # THEN three POSTs, one webhook-id, each validly signed
        assert len(receiver.received) == 3
        assert {r.headers["webhook-id"] for r in receiver.received} == {f"run_{run_id}"}
        for got in receiver.received:
            Webhook(wstack.secret).verify(got.body, got.headers)
        body = wstack.deliveries(thread_id, run_id).body
        assert body["status"] == "delivered"
        assert [a["status_code"] for a in body["attempts"]] == [500, 503, 200]
        assert [a["attempt"] for a in body["attempts"]] == [1, 2, 3]
        assert body["attempts"][0]["error"] == "HTTP 500"
        assert wstack.dlq_messages() == []


def test_a_retry_waits_for_its_delay_on_the_queue(make_stack: Any) -> None:
    stack = make_stack(webhook_retry_delays="2")
    with webhook_receiver(script=[500]) as receiver:
        _run_to_end(stack, receiver)
        # WHEN the first attempt fails
        assert stack.deliver_webhooks() == 1
        # THEN the message stays on the queue, invisible until the delay has passed
        assert stack.deliver_webhooks() == 0
        time.sleep(2.2)
        assert stack.deliver_webhooks() == 1
        assert len(receiver.received) == 2


def test_a_dead_receiver_ends_in_the_dlq_with_every_attempt_recorded(
    wstack: WebhookStack,
) -> None:
    with webhook_receiver(then=500) as receiver:
        thread_id, run_id = _run_to_end(wstack, receiver)
        wstack.deliver_webhooks()
        # THEN one attempt and one per retry delay (two), then failed and parked
        assert len(receiver.received) == 3
        body = wstack.deliveries(thread_id, run_id).body
        assert body["status"] == "failed"
        assert len(body["attempts"]) == 3
        [parked] = wstack.dlq_messages()
        assert json.loads(parked["Body"])["detail"]["run_id"] == run_id


def test_a_connection_error_is_retried(wstack: WebhookStack) -> None:
    with webhook_receiver() as receiver:
        dead_url = receiver.url
    # GIVEN a URL nobody listens on any more
    thread_id = wstack.create_thread()
    run = wstack.start_run(thread_id, input=BILLING, webhook=dead_url)
    wstack.pump()
    wstack.deliver_webhooks()
    body = wstack.deliveries(thread_id, run["run_id"]).body
    assert body["status"] == "failed"
    assert len(body["attempts"]) == 3
    assert all(a["status_code"] is None and "Connect" in a["error"] for a in body["attempts"])


def test_410_gone_stops_retrying(wstack: WebhookStack) -> None:
    with webhook_receiver(script=[410]) as receiver:
        thread_id, run_id = _run_to_end(wstack, receiver)
        wstack.deliver_webhooks()
        assert len(receiver.received) == 1
        body = wstack.deliveries(thread_id, run_id).body
        assert body["status"] == "gone"
        assert wstack.dlq_messages() == []


# --- exactly once in effect ------------------------------------------------------------------


def test_an_ending_finished_twice_delivers_once(wstack: WebhookStack) -> None:
    with webhook_receiver() as receiver:
        thread_id, run_id = _run_to_end(wstack, receiver)
        record = wstack.store.get_run(thread_id, run_id)
        assert record is not None
        # GIVEN the run's ending is finished a second time (its process died after putting
        # the event, before marking the ending done: whoever meets it finishes it again)
        from functions.store import Ending

        ending = Ending(thread_status="idle", effects=["event"], ended_at=record.updated_at)
        wstack.runs.complete_ending(
            type(record)(**{**record.__dict__, "ending": ending}), recovering=False
        )
        # WHEN both events' messages are handed to the sender
        handled = wstack.deliver_webhooks()
        # THEN both were handled and the receiver got one POST
        assert handled == 2
        assert len(receiver.received) == 1
        assert len(wstack.deliveries(thread_id, run_id).body["attempts"]) == 1


# --- validation, SSRF, tenants ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/hook", "not a url", "http://", "http://user:pw@example.com/hook"],
)
def test_a_bad_webhook_url_is_refused_at_creation(wstack: WebhookStack, url: str) -> None:
    thread_id = wstack.create_thread()
    reply = wstack.api(
        "POST", f"/threads/{thread_id}/runs", {"assistant_id": "support", "webhook": url}
    )
    assert reply.status == 422
    assert "webhook" in json.dumps(reply.body["detail"])
    # AND nothing was started
    assert wstack.api("GET", f"/threads/{thread_id}/runs").body == []


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.8/hook",
        "https://[::1]/hook",
        "https://224.0.0.1/hook",
    ],
)
def test_non_public_targets_are_refused_at_creation_on_aws(make_stack: Any, url: str) -> None:
    stack = make_stack(webhook_require_https=True, webhook_allow_private=False)
    thread_id = stack.create_thread()
    reply = stack.api(
        "POST", f"/threads/{thread_id}/runs", {"assistant_id": "support", "webhook": url}
    )
    assert reply.status == 422
    assert "not a public address" in reply.body["detail"]


def test_http_is_refused_on_aws(make_stack: Any) -> None:
    stack = make_stack(webhook_require_https=True)
    thread_id = stack.create_thread()
    reply = stack.api(
        "POST",
        f"/threads/{thread_id}/runs",
        {"assistant_id": "support", "webhook": "http://example.com/hook"},
    )
    assert reply.status == 422
    assert "https" in reply.body["detail"]


def test_a_target_that_became_private_is_refused_at_delivery(wstack: WebhookStack) -> None:
    with webhook_receiver() as receiver:
        # GIVEN a run created while its target was allowed
        thread_id, run_id = _run_to_end(wstack, receiver)
        # WHEN the sender finds it resolving to a non-public address (here: the check is on)
        wstack.sender.settings = wstack.settings.model_copy(update={"webhook_allow_private": False})
        wstack.deliver_webhooks()
        # THEN nothing was sent, the delivery failed at once and says why
        assert receiver.received == []
        body = wstack.deliveries(thread_id, run_id).body
        assert body["status"] == "failed"
        [attempt] = body["attempts"]
        assert "not a public address" in attempt["error"]


def test_another_tenant_cannot_read_the_deliveries(wstack: WebhookStack) -> None:
    with webhook_receiver() as receiver:
        thread_id, run_id = _run_to_end(wstack, receiver)
        wstack.deliver_webhooks()
        assert wstack.deliveries(thread_id, run_id, api_key=KEY_B).status == 404
        assert wstack.deliveries(thread_id, "nope").status == 404


# --- the event effect, finished by whoever meets the ending ----------------------------------


def test_an_event_that_failed_to_put_is_put_by_the_redelivered_step(wstack: WebhookStack) -> None:
    from tests.integration.test_run_endings import FailAws

    injector = FailAws()
    injector.attach(aws.events_client())
    try:
        with webhook_receiver() as receiver:
            # GIVEN a run whose ending's PutEvents fails once (the outcome is recorded)
            injector.fail("PutEvents", times=1)
            thread_id, run_id = _run_to_end(wstack, receiver)
            # WHEN the step message came back and was handled again (pump did that)
            wstack.deliver_webhooks()
            # THEN the event was put once the second time, and delivered once
            assert injector.rules[0][1] == 0
            assert len(receiver.received) == 1
            record = wstack.store.get_run(thread_id, run_id)
            assert record is not None
            assert record.ending is None
    finally:
        injector.detach()


def test_an_ending_left_unfinished_is_finished_by_housekeeping_with_its_event(
    wstack: WebhookStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions import clock
    from tests.integration.test_run_endings import FailAws, FakeClock

    fake = FakeClock()
    monkeypatch.setattr(clock, "now", fake.now)
    injector = FailAws()
    injector.attach(aws.events_client())
    try:
        with webhook_receiver() as receiver:
            # GIVEN a run whose last step ends it but fails to put the event, and whose step
            # message is then lost
            thread_id = wstack.create_thread()
            run = wstack.start_run(thread_id, input=BILLING, webhook=receiver.url)
            for _ in range(2):
                priority, message = wstack.receive(1)[0]
                wstack.deliver(priority, [message])
            injector.fail("PutEvents", times=1)
            priority, message = wstack.receive(1)[0]
            wstack.deliver(priority, [message])
            for _priority, left in wstack.receive(10):
                wstack.sqs.delete_message(
                    QueueUrl=wstack.queue_urls[_priority], ReceiptHandle=left["ReceiptHandle"]
                )
            record = wstack.store.get_run(thread_id, run["run_id"])
            assert record is not None
            assert record.status == "success"
            assert record.ending is not None
            assert record.ending.effects == ["event"]
            assert wstack.deliver_webhooks() == 0
            # WHEN housekeeping runs after the ending's recheck time
            fake.advance(wstack.settings.lease_s + 1)
            wstack.housekeeping()
            wstack.deliver_webhooks()
            # THEN the event was put and delivered, and the ending is done
            assert len(receiver.received) == 1
            assert receiver.received[0].payload["status"] == "success"
            record = wstack.store.get_run(thread_id, run["run_id"])
            assert record is not None
            assert record.ending is None
    finally:
        injector.detach()


def test_large_final_values_are_read_from_the_run_record(
    wstack: WebhookStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.webhooks import events

    # GIVEN values too large for an event (the limit lowered so that any values are)
    monkeypatch.setattr(events, "MAX_VALUES_IN_EVENT", 10)
    with webhook_receiver() as receiver:
        _run_to_end(wstack, receiver)
        [message] = wstack.sqs.receive_message(
            QueueUrl=wstack.webhook_queue_url, VisibilityTimeout=0
        )["Messages"]
        assert json.loads(message["Body"])["detail"]["values_omitted"] is True
        wstack.deliver_webhooks()
        # THEN the payload still carries them
        assert receiver.received[0].payload["values"]["route"] == "billing:done"


def test_the_secret_can_come_from_secrets_manager(make_stack: Any, moto_endpoint: str) -> None:
    import secrets as random

    # GIVEN the secret as the stack generates it in Secrets Manager
    value = register_secret(random.token_hex(16), "webhook secret (Secrets Manager)")
    manager = boto3.client("secretsmanager", endpoint_url=moto_endpoint)
    arn = manager.create_secret(
        Name=f"webhook-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"webhook_secret": value}),
    )["ARN"]
    stack = make_stack(webhook_secret="", webhook_secret_arn=arn)
    with webhook_receiver() as receiver:
        _run_to_end(stack, receiver)
        stack.deliver_webhooks()
        got = receiver.received[0]
        # THEN it verifies with whsec_<the stored value>
        Webhook(f"whsec_{value}").verify(got.body, got.headers)


def test_the_attempt_connects_to_the_checked_address_with_the_url_host(
    wstack: WebhookStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from functions.webhooks import urls

    # GIVEN a DNS that only the URL check asks, knowing a name nobody else can resolve
    real = socket.getaddrinfo

    def dns(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real(
            "127.0.0.1" if host == "hooks.lambdagraph.test" else host, port, *args, **kwargs
        )

    monkeypatch.setattr(urls, "getaddrinfo", dns)
    with webhook_receiver() as receiver:
        url = receiver.url.replace("127.0.0.1", "hooks.lambdagraph.test")
        thread_id = wstack.create_thread()
        run = wstack.start_run(thread_id, input=BILLING, webhook=url)
        wstack.pump()
        wstack.deliver_webhooks()
        # THEN it was delivered to the checked address (no second lookup, which would fail),
        # with the URL's host as Host
        [got] = receiver.received
        headers = {k.lower(): v for k, v in got.headers.items()}
        assert headers["host"] == url.split("/")[2]
        assert wstack.deliveries(thread_id, run["run_id"]).body["status"] == "delivered"

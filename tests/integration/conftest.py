"""A run-path stack on the moto server: tables and queues from ``functions.resources``, the
real handlers fed API Gateway and SQS events built from ``events/*.json``.

``Stack.pump()`` is the test's stand-in for the SQS event source mapping: it receives step
messages (high priority first) and hands them to ``step_worker.handler`` exactly as Lambda
would, deleting what succeeded and releasing what the handler reported as failed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.api_app import Services
from functions.checkpointer import make_checkpointer
from functions.handlers import api, housekeeping, step_worker
from functions.queues import StepQueues
from functions.resources import PRIORITIES, RUNTIME_TABLE, STEP_QUEUES
from functions.runs import RunService
from functions.settings import Settings
from functions.steps import StepWorker
from functions.store import Store
from functions.threads import ThreadService

EVENTS = Path(__file__).resolve().parents[2] / "events"
KEY_A = "key-a"
KEY_B = "key-b"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


@dataclass
class LambdaContext:
    function_name: str = "lambdagraph-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:lambdagraph-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


def create_runtime_table(client: Any, name: str) -> None:
    client.create_table(**RUNTIME_TABLE.create_table_request(name))


class Stack:
    def __init__(self, endpoint: str, **overrides: Any) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
        self.sqs = boto3.client("sqs", endpoint_url=endpoint)
        runtime_table = f"runtime-{suffix}"
        create_runtime_table(self.dynamodb, runtime_table)
        urls: dict[str, str] = {}
        for priority in PRIORITIES:
            spec = STEP_QUEUES[priority]
            urls[priority] = self.sqs.create_queue(
                QueueName=f"steps-{priority}-{suffix}",
                Attributes={"VisibilityTimeout": str(spec.visibility_timeout_s)},
            )["QueueUrl"]
        self.queue_urls = urls
        self.settings = Settings(
            runtime_table=runtime_table,
            checkpoint_table=f"checkpoints-{suffix}",
            queue_url_high=urls["high"],
            queue_url_normal=urls["normal"],
            queue_url_low=urls["low"],
            api_keys=f"{KEY_A},{KEY_B}",
            checkpointer="dynamodb",
            join_timeout_s=0.3,
            join_poll_s=0.02,
            **overrides,
        )
        self.store = Store(runtime_table, ttl_days=self.settings.ttl_days)
        # The checkpointer's own setup() creates its table (key schema from resources.py).
        make_checkpointer(self.settings).setup()
        self.runs = RunService(self.settings, self.store, StepQueues(self.settings))
        self.services = Services(threads=ThreadService(self.settings, self.store), runs=self.runs)
        self.worker = StepWorker(self.runs)

    # --- API ---------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        api_key: str | None = KEY_A,
        raw_body: str | None = None,
    ) -> Reply:
        event = load_event("api_create_thread.json")
        event["httpMethod"] = method
        event["path"] = path
        event["requestContext"]["httpMethod"] = method
        event["pathParameters"] = {"proxy": path.lstrip("/")}
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = (
            {k: [v] for k, v in query.items()} if query else None
        )
        headers = {"Content-Type": "application/json"}
        if api_key is not None:
            headers["x-api-key"] = api_key
        event["headers"] = headers
        event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        event["body"] = (
            raw_body if raw_body is not None else (None if body is None else json.dumps(body))
        )
        response = api.handler(event, LambdaContext(), services=self.services)
        text = response.get("body") or ""
        merged = {**(response.get("headers") or {})}
        for key, values in (response.get("multiValueHeaders") or {}).items():
            merged[key] = values[-1]
        return Reply(response["statusCode"], json.loads(text) if text else None, merged)

    def create_thread(self, **body: Any) -> str:
        reply = self.api("POST", "/threads", body)
        assert reply.status == 200, reply.body
        return str(reply.body["thread_id"])

    def start_run(self, thread_id: str, **body: Any) -> dict[str, Any]:
        body.setdefault("assistant_id", "support")
        reply = self.api("POST", f"/threads/{thread_id}/runs", body)
        assert reply.status == 200, reply.body
        return dict(reply.body)

    # --- queues --------------------------------------------------------------------------

    def receive(self, max_messages: int = 10) -> list[tuple[str, dict[str, Any]]]:
        """Messages waiting, highest priority first, as (priority, SQS message)."""
        for priority in PRIORITIES:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_urls[priority],
                MaxNumberOfMessages=max_messages,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if messages:
                return [(priority, m) for m in messages]
        return []

    def deliver(self, priority: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Hand messages to the step worker as one Lambda SQS event; delete what succeeded."""
        template = load_event("sqs_step_message.json")["Records"][0]
        records = []
        for m in messages:
            record = json.loads(json.dumps(template))
            record.update(
                messageId=m["MessageId"],
                receiptHandle=m["ReceiptHandle"],
                body=m["Body"],
                attributes=m.get("Attributes", {}),
                md5OfBody=m["MD5OfBody"],
                eventSourceARN=f"arn:aws:sqs:us-east-1:123456789012:steps-{priority}",
            )
            records.append(record)
        result = step_worker.handler({"Records": records}, LambdaContext(), worker=self.worker)
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] in failed:
                # Back to the queue at once (Lambda would wait for the visibility timeout).
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_urls[priority],
                    ReceiptHandle=m["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
            else:
                self.sqs.delete_message(
                    QueueUrl=self.queue_urls[priority], ReceiptHandle=m["ReceiptHandle"]
                )
        return dict(result)

    def pump(self, limit: int = 50) -> int:
        """Deliver step messages one at a time until the queues are empty; how many."""
        delivered = 0
        while delivered < limit:
            batch = self.receive(max_messages=1)
            if not batch:
                return delivered
            priority, message = batch[0]
            self.deliver(priority, [message])
            delivered += 1
        raise AssertionError(f"queues still busy after {limit} messages")

    def housekeeping(self) -> dict[str, Any]:
        event = load_event("housekeeping_scheduled.json")
        return dict(housekeeping.handler(event, LambdaContext(), runs=self.runs))


@pytest.fixture
def stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return Stack(moto_endpoint)

"""The run-path ``Stack`` plus approvals on the moto server: the approval-requests queue, the
state machine from ``functions/approvals/state_machine.asl.json`` (the file CDK deploys),
Step Functions execution switched on, a verified SES sender, and the API served over real
HTTP so reviewers' links are followed as a browser would.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from functions.approvals import state_machine_definition
from functions.approvals.service import ApprovalService
from functions.handlers import api
from functions.handlers import approvals as approvals_handler
from infra.local.api_gateway import ApiGatewayServer
from infra.local.emails import sent_emails
from tests.conftest import register_secret
from tests.integration.conftest import LambdaContext, Stack, load_event

SENDER = "approvals@example.com"


def enable_execution(endpoint: str) -> None:
    """moto executes state machines only when told (ARCHITECTURE.md, verified facts)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/config",
        data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).read()


@dataclass
class Page:
    status: int
    body: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class ApprovalStack(Stack):
    def __init__(self, endpoint: str, **overrides: Any) -> None:
        self.endpoint = endpoint
        suffix = uuid.uuid4().hex[:10]
        sqs = boto3.client("sqs", endpoint_url=endpoint)
        dlq = sqs.create_queue(QueueName=f"approvals-dlq-{suffix}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.approval_queue_url = sqs.create_queue(
            QueueName=f"approvals-{suffix}",
            Attributes={
                "VisibilityTimeout": "30",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}),
            },
        )["QueueUrl"]
        self.sfn = boto3.client("stepfunctions", endpoint_url=endpoint)
        self.state_machine_arn = self.sfn.create_state_machine(
            name=f"approvals-{suffix}",
            definition=state_machine_definition(self.approval_queue_url),
            roleArn="arn:aws:iam::123456789012:role/approvals",
            type="STANDARD",
        )["stateMachineArn"]
        self.ses = boto3.client("ses", endpoint_url=endpoint)
        self.ses.verify_email_identity(EmailAddress=SENDER)
        # Unique per stack: moto's mailbox is shared by every test of the session.
        self.reviewer = f"reviewer-{suffix}@example.com"
        self.signing_key = register_secret(secrets.token_urlsafe(32), "approval signing key")
        self.server = ApiGatewayServer(self._invoke_api)
        self.server.start()
        super().__init__(
            endpoint,
            approval_state_machine_arn=self.state_machine_arn,
            approval_queue_url=self.approval_queue_url,
            approval_signing_key=self.signing_key,
            approval_sender=SENDER,
            reviewers=self.reviewer,
            public_base_url=self.server.url,
            **overrides,
        )
        self.approvals = ApprovalService(self.runs)
        self.seen_emails = 0

    def _invoke_api(self, event: dict[str, Any]) -> Any:
        return api.handler(event, LambdaContext(), services=self.services)

    def close(self) -> None:
        self.server.stop()

    # --- the approval-requests queue ---------------------------------------------------

    def approval_messages(
        self, wait_s: float = 10.0, *, keep: bool = False
    ) -> list[dict[str, Any]]:
        """Wait for messages on the approval-requests queue."""
        deadline = time.monotonic() + wait_s
        while True:
            response = self.sqs.receive_message(
                QueueUrl=self.approval_queue_url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
                WaitTimeSeconds=1,
            )
            messages = response.get("Messages", [])
            if messages or time.monotonic() >= deadline:
                return list(messages)

    def deliver_approvals(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Hand messages to the notifier as one Lambda SQS event; delete what succeeded."""
        template = load_event("sqs_approval_message.json")["Records"][0]
        records = []
        for m in messages:
            record = json.loads(json.dumps(template))
            record.update(
                messageId=m["MessageId"],
                receiptHandle=m["ReceiptHandle"],
                body=m["Body"],
                attributes=m.get("Attributes", {}),
                md5OfBody=m["MD5OfBody"],
                eventSourceARN="arn:aws:sqs:us-east-1:123456789012:approvals",
            )
            records.append(record)
        result = approvals_handler.handler(
            {"Records": records}, LambdaContext(), service=self.approvals
        )
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                self.sqs.delete_message(
                    QueueUrl=self.approval_queue_url, ReceiptHandle=m["ReceiptHandle"]
                )
        return dict(result)

    def pump_approvals(self, kind: str, wait_s: float = 15.0) -> list[dict[str, Any]]:
        """Wait for the state machine's ``kind`` message(s) and deliver them; their bodies."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            messages = self.approval_messages(wait_s=1)
            wanted = [m for m in messages if json.loads(m["Body"]).get("kind") == kind]
            others = [m for m in messages if m not in wanted]
            for m in others:  # not ours to handle now: back to the queue
                self.sqs.change_message_visibility(
                    QueueUrl=self.approval_queue_url,
                    ReceiptHandle=m["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
            if wanted:
                self.deliver_approvals(wanted)
                return [json.loads(m["Body"]) for m in wanted]
        raise AssertionError(f"no {kind!r} message from the approval state machine")

    # --- mail and pages ----------------------------------------------------------------

    def emails(self) -> list[dict[str, Any]]:
        """Mail SES accepted (moto runs in this process), oldest first."""
        return sent_emails()

    def emails_to(self, reviewer: str) -> list[dict[str, Any]]:
        return [e for e in self.emails() if reviewer in e["to"] and e["from"] == SENDER]

    def open(
        self,
        url: str,
        *,
        data: dict[str, Any] | None = None,
        accept: str = "text/html",
        json_body: bool = False,
    ) -> Page:
        """A real HTTP request to the API server (``url`` absolute, or a path)."""
        if not url.startswith("http"):
            url = self.server.url + url
        body = None
        headers = {"Accept": accept}
        if data is not None:
            if json_body:
                body = json.dumps(data).encode()
                headers["Content-Type"] = "application/json"
            else:
                from urllib.parse import urlencode

                body = urlencode(data).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Page(response.status, response.read().decode(), dict(response.headers))
        except urllib.error.HTTPError as exc:
            return Page(exc.code, exc.read().decode(), dict(exc.headers))

    def execution(self, approval_id: str) -> dict[str, Any]:
        record = self.approvals.records.get(approval_id)
        assert record is not None
        assert record.execution_arn
        return dict(self.sfn.describe_execution(executionArn=record.execution_arn))

    def wait_execution(self, approval_id: str, *statuses: str, wait_s: float = 15.0) -> str:
        """Wait until the approval's execution has one of ``statuses``; that status."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            status = str(self.execution(approval_id)["status"])
            if status in statuses:
                return status
            time.sleep(0.2)
        raise AssertionError(
            f"execution is {self.execution(approval_id)['status']}, not {statuses}"
        )


def link_path(url: str) -> str:
    split = urlsplit(url)
    return f"{split.path}?{split.query}"


@pytest.fixture
def approval_stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApprovalStack]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # Step Functions' service integrations call back into this moto server.
    monkeypatch.setenv("MOTO_PORT", moto_endpoint.rsplit(":", 1)[1])
    enable_execution(moto_endpoint)
    stack = ApprovalStack(moto_endpoint)
    try:
        yield stack
    finally:
        stack.close()

"""The local stack's own parts, with tiny handlers injected: resources, pollers, HTTP adapter."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from functions.resources import (
    CACHE_TABLE,
    CHECKPOINT_TABLE,
    MEMORY_TABLE,
    PAYLOAD_BUCKET,
    RUNTIME_TABLE,
    STEP_QUEUES,
    local_name,
)
from infra.local.api_gateway import build_event
from infra.local.pollers import PolledQueue, QueuePollers, failed_message_ids, moto_peek, sqs_record
from infra.local.stack import LocalStack

from .conftest import RecordingHandler

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("e2e")]


def _request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, list[str]]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw_headers: dict[str, list[str]] = {}
            for name, value in response.headers.items():
                raw_headers.setdefault(name, []).append(value)
            return response.status, json.loads(response.read() or b"null"), raw_headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null"), {}


# --- resources -------------------------------------------------------------------------------


def test_tables_are_created_from_the_shared_specs(stub_stack: LocalStack) -> None:
    # GIVEN a running stack
    dynamodb = stub_stack.client("dynamodb")

    # WHEN the runtime table is described
    table = dynamodb.describe_table(TableName=local_name(RUNTIME_TABLE.logical_id))["Table"]
    ttl = dynamodb.describe_time_to_live(TableName=local_name(RUNTIME_TABLE.logical_id))

    # THEN it has the spec's keys, GSI and TTL, and functions are told its name
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["gsi1"]
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "ttl"
    assert stub_stack.resources is not None
    assert stub_stack.resources.env[RUNTIME_TABLE.env_var] == local_name(RUNTIME_TABLE.logical_id)
    assert stub_stack.resources.env[CHECKPOINT_TABLE.env_var] == local_name(
        CHECKPOINT_TABLE.logical_id
    )


def test_the_node_cache_table_is_created_with_its_ttl(stub_stack: LocalStack) -> None:
    # GIVEN a running stack WHEN the node cache table is described
    dynamodb = stub_stack.client("dynamodb")
    name = local_name(CACHE_TABLE.logical_id)
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    # THEN entries expire on ``expires_at`` and functions are told its name (so graphs the
    # platform compiles get the cache)
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    assert stub_stack.resources is not None
    assert stub_stack.resources.env[CACHE_TABLE.env_var] == name


def test_the_memory_table_is_created_with_its_ttl(stub_stack: LocalStack) -> None:
    # GIVEN a running stack WHEN the memory store's table is described
    dynamodb = stub_stack.client("dynamodb")
    name = local_name(MEMORY_TABLE.logical_id)
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    # THEN memories put with a TTL expire on ``expires_at`` and functions are told its name
    # (so graphs the platform compiles get the store)
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    assert stub_stack.resources is not None
    assert stub_stack.resources.env[MEMORY_TABLE.env_var] == name


def test_bucket_is_created(stub_stack: LocalStack) -> None:
    # GIVEN a running stack WHEN its buckets are listed
    names = [b["Name"] for b in stub_stack.client("s3").list_buckets()["Buckets"]]

    # THEN the payload bucket is there
    assert local_name(PAYLOAD_BUCKET.logical_id) in names


def test_each_step_queue_has_a_dlq_with_the_specs_receive_count(stub_stack: LocalStack) -> None:
    # GIVEN a running stack
    sqs = stub_stack.client("sqs")
    assert stub_stack.resources is not None
    env = stub_stack.resources.env

    for priority, spec in STEP_QUEUES.items():
        # WHEN a step queue's attributes are read
        attributes = sqs.get_queue_attributes(QueueUrl=env[spec.env_var], AttributeNames=["All"])[
            "Attributes"
        ]
        redrive = json.loads(attributes["RedrivePolicy"])

        # THEN it redrives to its DLQ after maxReceiveCount, with the spec's visibility timeout
        dlq_arn = sqs.get_queue_attributes(
            QueueUrl=env[str(spec.dlq_env_var)], AttributeNames=["QueueArn"]
        )
        assert redrive == {
            "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
            "maxReceiveCount": spec.max_receive_count,
        }, priority
        assert attributes["VisibilityTimeout"] == str(spec.visibility_timeout_s)


def test_stack_points_boto3_at_moto_while_running_and_restores_the_environment(
    step_handler: RecordingHandler,
) -> None:
    import os

    # GIVEN the environment before the stack starts
    before = os.environ.get("AWS_ENDPOINT_URL")
    stack = LocalStack(
        port=0, api_handler=lambda e, c: {}, step_handler=step_handler, housekeeping_interval_s=0
    )

    # WHEN it runs, and then stops
    with stack:
        during = os.environ.get("AWS_ENDPOINT_URL")
        queue_url = os.environ.get(STEP_QUEUES["high"].env_var)
    after = os.environ.get("AWS_ENDPOINT_URL")

    # THEN functions saw moto and the queue, and the environment is as it was
    assert during == stack.moto_url
    assert queue_url is not None
    assert queue_url.endswith(local_name(STEP_QUEUES["high"].logical_id))
    assert after == before


# --- pollers -----------------------------------------------------------------------------------


def test_a_step_message_reaches_the_handler_as_a_lambda_sqs_event(
    stub_stack: LocalStack, step_handler: RecordingHandler
) -> None:
    # GIVEN a message with an attribute on the normal queue
    normal = stub_stack.step_queues()[1]
    stub_stack.client("sqs").send_message(
        QueueUrl=normal.url,
        MessageBody='{"run_id": "r1"}',
        MessageAttributes={"priority": {"DataType": "String", "StringValue": "normal"}},
    )

    # WHEN the pollers pick it up
    [record] = step_handler.wait_for(1)

    # THEN the handler gets a Lambda-shaped record, and the message is deleted afterwards
    assert record["body"] == '{"run_id": "r1"}'
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == normal.arn
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["attributes"]["SentTimestamp"].isdigit()
    assert record["messageAttributes"]["priority"]["stringValue"] == "normal"
    assert record["messageAttributes"]["priority"]["dataType"] == "String"
    assert {"messageId", "receiptHandle", "md5OfBody"} <= record.keys()


def test_a_reported_batch_item_failure_is_redelivered_then_dead_lettered(
    stub_stack: LocalStack, step_handler: RecordingHandler
) -> None:
    # GIVEN a handler that always reports the message as failed
    step_handler.fail_bodies.add("poison")
    high = stub_stack.step_queues()[0]
    sqs = stub_stack.client("sqs")
    max_receives = STEP_QUEUES["high"].max_receive_count

    # WHEN it is sent
    sqs.send_message(QueueUrl=high.url, MessageBody="poison")
    records = step_handler.wait_for(max_receives)

    # THEN it is delivered maxReceiveCount times with a growing receive count, then lands in the DLQ
    assert [r["attributes"]["ApproximateReceiveCount"] for r in records] == [
        str(n) for n in range(1, max_receives + 1)
    ]
    assert stub_stack.resources is not None
    dlq_url = stub_stack.resources.env[str(STEP_QUEUES["high"].dlq_env_var)]
    dead = _receive_within(sqs, dlq_url)
    assert [m["Body"] for m in dead] == ["poison"]


def test_a_handler_that_raises_fails_the_whole_batch(
    stub_stack: LocalStack, step_handler: RecordingHandler
) -> None:
    # GIVEN a handler that raises the first time it sees a body
    step_handler.raise_for_bodies.add("crash-once")
    low = stub_stack.step_queues()[2]

    # WHEN the message is handled
    stub_stack.client("sqs").send_message(QueueUrl=low.url, MessageBody="crash-once")
    step_handler.wait_for(1)
    step_handler.raise_for_bodies.clear()
    records = step_handler.wait_for(2)

    # THEN it comes back for a second delivery
    assert [r["attributes"]["ApproximateReceiveCount"] for r in records[:2]] == ["1", "2"]


def _receive_within(sqs: Any, url: str, attempts: int = 20) -> list[dict[str, Any]]:
    for _ in range(attempts):
        messages: list[dict[str, Any]] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if messages:
            return messages
    return []


def test_higher_priority_queues_are_drained_first(moto_endpoint: str) -> None:
    import boto3

    # GIVEN three queues with a backlog of low and normal messages and one high message
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    queues = []
    for label in ("high", "normal", "low"):
        name = f"priority-test-{label}-{id(sqs)}"
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        queues.append(PolledQueue(label=label, name=name, url=url, arn=arn))
    for n in range(5):
        sqs.send_message(QueueUrl=queues[2].url, MessageBody=f"low-{n}")
    for n in range(3):
        sqs.send_message(QueueUrl=queues[1].url, MessageBody=f"normal-{n}")
    sqs.send_message(QueueUrl=queues[0].url, MessageBody="high-0")
    handler = RecordingHandler()

    # WHEN one worker drains them
    pollers = QueuePollers(
        queues, handler, sqs_client=sqs, region="us-east-1", workers=1, peek=moto_peek("us-east-1")
    )
    pollers.start()
    try:
        records = handler.wait_for(9)
    finally:
        pollers.stop()

    # THEN high goes first, then every normal, then the lows
    order = [r["body"].split("-")[0] for r in records]
    assert order == ["high"] + ["normal"] * 3 + ["low"] * 5


def test_failed_message_ids_follow_lambda_partial_batch_rules() -> None:
    # GIVEN two messages
    messages = [{"MessageId": "a"}, {"MessageId": "b"}]

    # WHEN / THEN None or an empty list means all succeeded; an unknown id fails the whole batch
    assert failed_message_ids(None, messages) == set()
    assert failed_message_ids({"batchItemFailures": []}, messages) == set()
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "b"}]}, messages) == {"b"}
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "zz"}]}, messages) == {
        "a",
        "b",
    }


def test_binary_message_attributes_are_base64_in_the_record() -> None:
    # GIVEN a received message with a binary attribute
    message = {
        "MessageId": "m",
        "ReceiptHandle": "h",
        "Body": "{}",
        "MessageAttributes": {"blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}},
    }

    # WHEN it becomes a record THEN the value is base64, as Lambda sends it
    record = sqs_record(message, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="


# --- HTTP adapter --------------------------------------------------------------------------------


def test_a_request_becomes_a_rest_api_proxy_event(stub_stack: LocalStack) -> None:
    # GIVEN a POST with a JSON body, a repeated query parameter and an API key
    # WHEN it is sent over HTTP
    status, payload, headers = _request(
        f"{stub_stack.url}/threads/t1/runs?a=1&a=2&b=x",
        method="POST",
        body=b'{"assistant_id": "support"}',
        headers={"Content-Type": "application/json", "x-api-key": "k1"},
    )

    # THEN the handler saw a v1 proxy event and its response came back as written
    event = payload["event"]
    assert status == 201
    assert payload["function"] == "lambdagraph-api"
    assert (event["httpMethod"], event["path"], event["resource"]) == (
        "POST",
        "/threads/t1/runs",
        "/{proxy+}",
    )
    assert event["queryStringParameters"] == {"a": "2", "b": "x"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x"]}
    assert event["pathParameters"] is None
    assert event["body"] == '{"assistant_id": "support"}'
    assert event["isBase64Encoded"] is False
    # (header names arrive as the client spelled them; urllib capitalises them)
    assert {k.lower(): v for k, v in event["headers"].items()}["x-api-key"] == "k1"
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert event["requestContext"]["identity"]["apiKey"] == "k1"
    assert event["requestContext"]["stage"] == "local"
    assert event["requestContext"]["requestId"]
    assert headers["X-Multi"] == ["a", "b"]
    assert headers["X-Single"] == ["one"]


def test_a_get_without_body_or_query_has_null_fields(stub_stack: LocalStack) -> None:
    # GIVEN / WHEN a plain GET
    status, payload, _ = _request(f"{stub_stack.url}/ok")

    # THEN body and query are null, as API Gateway sends them
    assert status == 201
    assert payload["event"]["body"] is None
    assert payload["event"]["queryStringParameters"] is None


def test_a_binary_body_is_passed_base64_encoded() -> None:
    # GIVEN a body that is not text WHEN the event is built
    event = build_event(
        method="PUT",
        raw_path="/blob",
        headers=[("Content-Type", "application/octet-stream")],
        body=b"\xff\x00",
        source_ip="127.0.0.1",
        host="localhost",
    )

    # THEN it is base64 with the flag set
    assert (event["body"], event["isBase64Encoded"]) == ("/wA=", True)


def test_an_absurdly_large_body_is_refused_before_the_handler(stub_stack: LocalStack) -> None:
    import http.client
    from urllib.parse import urlsplit

    # GIVEN a request announcing an 11 MiB body
    address = urlsplit(stub_stack.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    connection.putrequest("POST", "/threads")
    connection.putheader("Content-Length", str(11 * 1024 * 1024))
    connection.endheaders()

    # WHEN the server answers THEN it is 413 with a detail
    response = connection.getresponse()
    assert response.status == 413
    assert "detail" in json.loads(response.read())
    connection.close()


def test_a_handler_that_raises_gives_502(stub_stack: LocalStack) -> None:
    # GIVEN / WHEN the handler raises
    status, payload, _ = _request(f"{stub_stack.url}/boom")

    # THEN the client gets API Gateway's 502
    assert status == 502
    assert payload == {"message": "Internal server error"}


def test_a_worker_is_kept_for_high_work_while_low_steps_run(moto_endpoint: str) -> None:
    import threading

    import boto3

    # GIVEN two workers, and a low step that holds its worker until released
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    queues = []
    for label in ("high", "low"):
        name = f"reserve-test-{label}-{id(sqs)}"
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        queues.append(PolledQueue(label=label, name=name, url=url, arn=arn))
    release_low = threading.Event()
    handler = RecordingHandler()

    def step(event: dict[str, Any], context: Any) -> dict[str, Any]:
        result = handler(event, context)
        if event["Records"][0]["body"].startswith("low"):
            release_low.wait(30)
        return result

    pollers = QueuePollers(
        queues, step, sqs_client=sqs, region="us-east-1", workers=2, peek=moto_peek("us-east-1")
    )
    pollers.start()
    try:
        sqs.send_message(QueueUrl=queues[1].url, MessageBody="low-0")
        sqs.send_message(QueueUrl=queues[1].url, MessageBody="low-1")
        handler.wait_for(1)

        # WHEN a high message arrives while the low step still runs
        sqs.send_message(QueueUrl=queues[0].url, MessageBody="high-0")
        records = handler.wait_for(2)
    finally:
        release_low.set()
        pollers.stop()

    # THEN the high step ran on the kept worker before the second low step started
    assert [r["body"] for r in records[:2]] == ["low-0", "high-0"]


def test_a_busy_api_environment_does_not_hold_up_other_requests(
    step_handler: RecordingHandler, tmp_path: Path
) -> None:
    import concurrent.futures
    import os

    # GIVEN a stack whose API handler can be imported by another environment
    marker = tmp_path / "released"
    stack = LocalStack(
        port=0,
        api_handler_path="tests.e2e.slow_api.handler",
        step_handler=step_handler,
        housekeeping_interval_s=0,
        api_environments=2,
    )
    with stack, concurrent.futures.ThreadPoolExecutor(1) as pool:
        # WHEN one request waits for a second one to release it
        slow = pool.submit(_request, f"{stack.url}/slow?marker={marker}")
        started = marker.with_suffix(".started")
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        # Only a release sent while the first request waits proves they overlapped: sent
        # before it started, the first would see the marker at once even when run serially.
        assert started.exists(), "the first request never started"
        assert not slow.done(), "the first request ended before the release was sent"
        _, released, _ = _request(f"{stack.url}/release?marker={marker}")
        _, waited, _ = slow.result(timeout=60)

    # THEN the second ran in another environment (a process) while the first waited
    assert released["outcome"] == "released"
    assert waited["outcome"] == "saw release"
    assert {released["pid"], waited["pid"]} >= {os.getpid()}
    assert released["pid"] != waited["pid"]


def test_a_queue_never_runs_more_batches_than_its_local_share(moto_endpoint: str) -> None:
    import threading

    import boto3

    # GIVEN four workers and a low queue whose share of them is one
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"cap-test-low-{id(sqs)}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    low = PolledQueue(label="low", name=name, url=url, arn=arn, max_in_flight=1)
    running = 0
    most = 0
    lock = threading.Lock()
    handler = RecordingHandler()

    def step(event: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        threading.Event().wait(0.05)
        with lock:
            running -= 1
        return handler(event, context)

    for n in range(4):
        sqs.send_message(QueueUrl=url, MessageBody=f"low-{n}")

    # WHEN the backlog is drained
    pollers = QueuePollers(
        [low], step, sqs_client=sqs, region="us-east-1", workers=4, peek=moto_peek("us-east-1")
    )
    pollers.start()
    try:
        records = handler.wait_for(4)
    finally:
        pollers.stop()

    # THEN every message was handled, one batch at a time
    assert sorted(r["body"] for r in records) == [f"low-{n}" for n in range(4)]
    assert most == 1


def test_local_queue_shares_follow_the_deployed_concurrency(stub_stack: LocalStack) -> None:
    # GIVEN the stack's step queues WHEN their local shares are read
    shares = {queue.label: queue.max_in_flight for queue in stub_stack.step_queues()}

    # THEN high may use every worker and lower queues get fewer, as MaximumConcurrency says
    high, normal, low = shares["high"], shares["normal"], shares["low"]
    assert high is not None
    assert normal is not None
    assert low is not None
    assert high >= normal >= low >= 1
    assert high > low

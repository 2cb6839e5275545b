"""The local stack fails the way AWS does: scaled timings, the function timeout, injected faults.

The stack runs in this process with small step handlers injected. They make real AWS calls
to the stack's moto server through boto3 clients of their own, created as the engine creates
its clients, so each call goes through the botocore hook the stack installs. A run through
the real engine under faults is in ``test_faults.py``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from functions.resources import CHECKPOINT_TABLE, STEP_QUEUES, local_name
from infra.local.faults import FaultConfig, FaultConfigError
from infra.local.stack import LocalStack
from infra.local.timings import LocalConfigError

from .conftest import REPO, RecordingHandler, echo_api, free_port

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-reliability")]

Handler = Callable[[dict[str, Any], Any], Any]
# At this scale the step worker times out after 1 s and a message comes back after 6 s.
FAST = 300.0


@contextmanager
def stack_with(step_handler: Handler, **options: Any) -> Iterator[LocalStack]:
    stack = LocalStack(
        port=0,
        workers=2,
        retry_delay_s=0,
        api_handler=echo_api,
        step_handler=step_handler,
        housekeeping_interval_s=0,
        **options,
    )
    with stack:
        yield stack


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _in_flight(queue_name: str) -> list[tuple[int, float]]:
    """(receive count, seconds until visible again) of each message still on a queue (moto)."""
    from moto.sqs.models import sqs_backends

    queue = sqs_backends["123456789012"]["us-east-1"].queues[queue_name]
    now_ms = time.time() * 1000
    return [(m.approximate_receive_count, (m.visible_at - now_ms) / 1000) for m in queue._messages]


def _marker_queue(stack: LocalStack, name: str) -> str:
    return str(stack.client("sqs").create_queue(QueueName=name)["QueueUrl"])


def _count_messages(stack: LocalStack, url: str) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


# --- timings ----------------------------------------------------------------------------------


def test_the_time_scale_reaches_queues_lease_and_function_timeout() -> None:
    # GIVEN a step handler noting the lease and the time it is given
    seen: list[tuple[str | None, int]] = []

    def step(event: dict[str, Any], context: Any) -> dict[str, Any]:
        from functions.settings import get_settings

        seen.append((os.environ.get("LAMBDAGRAPH_LEASE_S"), context.get_remaining_time_in_millis()))
        assert get_settings().lease_s == 6
        return {"batchItemFailures": []}

    # WHEN the stack runs at time scale 60 and a step message arrives
    with stack_with(step, time_scale=60) as stack:
        sqs = stack.client("sqs")
        assert stack.resources is not None
        env = stack.resources.env
        visibility = {
            priority: sqs.get_queue_attributes(
                QueueUrl=env[spec.env_var], AttributeNames=["VisibilityTimeout"]
            )["Attributes"]["VisibilityTimeout"]
            for priority, spec in STEP_QUEUES.items()
        }
        sqs.send_message(QueueUrl=env[STEP_QUEUES["normal"].env_var], MessageBody="{}")
        assert _wait(lambda: bool(seen))

    # THEN visibility is 1800/60 s, the lease 360/60 s and the invocation gets 300/60 s
    assert visibility == {"high": "30", "normal": "30", "low": "30"}
    [(lease, remaining_ms)] = seen
    assert lease == "6"
    assert 0 < remaining_ms <= 5000


def test_a_lease_shorter_than_the_function_timeout_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a lease set by hand below the (deployed) 300 s function timeout
    monkeypatch.setenv("LAMBDAGRAPH_LEASE_S", "200")
    endpoint_before = os.environ.get("AWS_ENDPOINT_URL")

    # WHEN the stack starts THEN it refuses, saying what to change, and leaves nothing behind
    with pytest.raises(LocalConfigError, match="must exceed the step worker timeout") as refused:
        LocalStack(port=0, api_handler=echo_api, step_handler=RecordingHandler()).start()
    assert "unset LAMBDAGRAPH_LEASE_S" in str(refused.value)
    assert os.environ.get("AWS_ENDPOINT_URL") == endpoint_before


@pytest.mark.parametrize("scale", ["fast", "0", "-2", "nan"])
def test_a_time_scale_that_is_not_a_positive_number_refuses_to_start(
    scale: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a bad LAMBDAGRAPH_LOCAL_TIME_SCALE
    monkeypatch.setenv("LAMBDAGRAPH_LOCAL_TIME_SCALE", scale)

    # WHEN / THEN the stack refuses to start, naming the setting
    with pytest.raises(LocalConfigError, match="LAMBDAGRAPH_LOCAL_TIME_SCALE must be a positive"):
        LocalStack(port=0, api_handler=echo_api, step_handler=RecordingHandler()).start()


# --- the function timeout ---------------------------------------------------------------------


def test_an_invocation_past_its_timeout_is_dead_and_its_message_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="infra.local")
    # GIVEN a step handler that, on its first delivery, works past the 1 s timeout and then
    # tries an AWS call, catching every Exception
    what_happened: list[str] = []
    receive_counts: list[str] = []
    marker: dict[str, str] = {}

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        [record] = event["Records"]
        receive_counts.append(record["attributes"]["ApproximateReceiveCount"])
        if len(receive_counts) > 1:
            return {"batchItemFailures": []}
        time.sleep(1.5)
        sqs = boto3.client("sqs")
        try:
            sqs.send_message(QueueUrl=marker["url"], MessageBody="sent after the deadline")
            what_happened.append("sent")
        except Exception:
            what_happened.append("caught")
        except BaseException as exc:
            what_happened.append(type(exc).__name__)
            raise
        return {"batchItemFailures": []}

    with stack_with(slow, time_scale=FAST) as stack:
        marker["url"] = _marker_queue(stack, "timeout-marker")
        normal = stack.step_queues()[1]

        # WHEN a message is handled
        stack.client("sqs").send_message(QueueUrl=normal.url, MessageBody='{"run_id": "r1"}')
        assert _wait(lambda: "Task timed out after 1.00 seconds" in caplog.text)
        in_flight = _in_flight(normal.name)
        assert _wait(lambda: bool(what_happened))
        # (the queue's visibility timeout is 6 s: the second delivery follows it)
        assert _wait(lambda: len(receive_counts) >= 2)
        marker_count = _count_messages(stack, marker["url"])

    # THEN Lambda's line was logged, the message stayed in flight for the visibility timeout
    # (not released, not deleted) and came back, and the late call never reached AWS
    [(receives, hidden_for_s)] = in_flight
    assert receives == 1
    assert hidden_for_s > 2
    assert receive_counts == ["1", "2"]
    assert what_happened == ["InvocationTimedOut"]
    assert marker_count == 0


# --- injected faults --------------------------------------------------------------------------


def test_a_crash_kills_the_invocation_at_an_aws_call_and_leaves_its_message_in_flight(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="infra.local")
    # GIVEN every invocation crashes, and a handler making six AWS calls (as many as the crash
    # points are first drawn among), each leaving a mark on a queue
    finished: list[bool] = []
    marker: dict[str, str] = {}

    def step(event: dict[str, Any], context: Any) -> dict[str, Any]:
        sqs = boto3.client("sqs")
        for n in range(6):
            sqs.send_message(QueueUrl=marker["url"], MessageBody=f"call {n}")
        finished.append(True)
        return {"batchItemFailures": []}

    with stack_with(step, time_scale=FAST, faults="crash=1") as stack:
        marker["url"] = _marker_queue(stack, "crash-marker")
        high = stack.step_queues()[0]

        # WHEN a step message is handled
        stack.client("sqs").send_message(QueueUrl=high.url, MessageBody='{"run_id": "r2"}')
        assert _wait(lambda: "step worker died (injected crash" in caplog.text)
        in_flight = _in_flight(high.name)
        counts = _get_json(f"{stack.url}/_local/faults")
        marks = _count_messages(stack, marker["url"])

    # THEN it died where the log says (the calls before it, and that call if "after", went
    # through), the handler never finished, the message is in flight and the crash is counted
    died = next(r.getMessage() for r in caplog.records if "injected crash" in r.getMessage())
    call = int(died.split("AWS call #")[1].split(")")[0])
    expected_marks = call if "after AWS call" in died else call - 1
    assert marks == expected_marks
    assert finished == []
    [(receives, hidden_for_s)] = in_flight
    assert receives == 1
    assert hidden_for_s > 2
    assert counts == {"crash": 1, "duplicate": 0, "throttle": 0}


def test_a_duplicate_delivers_the_same_message_to_two_invocations() -> None:
    # GIVEN every received message is delivered twice
    handler = RecordingHandler()

    with stack_with(handler, faults="duplicate=1") as stack:
        low = stack.step_queues()[2]

        # WHEN six messages are sent
        for n in range(6):
            stack.client("sqs").send_message(QueueUrl=low.url, MessageBody=f"dup-{n}")
        records = handler.wait_for(12)
        # (a later copy may still be on its way once the first twelve arrived)
        assert _wait(lambda: _get_json(f"{stack.url}/_local/faults")["duplicate"] >= 6)
        counts = _get_json(f"{stack.url}/_local/faults")

    # THEN each message id reached the handler exactly twice, and six duplicates are counted
    by_id: dict[str, int] = {}
    for record in records:
        by_id[record["messageId"]] = by_id.get(record["messageId"], 0) + 1
    assert sorted(by_id.values()) == [2] * 6
    assert counts == {"crash": 0, "duplicate": 6, "throttle": 0}


def test_throttling_answers_aws_errors_that_botocore_retries() -> None:
    # GIVEN every AWS call is throttled, and a handler calling SQS and DynamoDB with one retry
    errors: list[tuple[str, int, int]] = []
    done = threading.Event()
    marker: dict[str, str] = {}

    def step(event: dict[str, Any], context: Any) -> dict[str, Any]:
        config = Config(retries={"mode": "standard", "max_attempts": 1})
        calls = (
            lambda: boto3.client("sqs", config=config).send_message(
                QueueUrl=marker["url"], MessageBody="throttled"
            ),
            lambda: boto3.client("dynamodb", config=config).describe_table(
                TableName=local_name(CHECKPOINT_TABLE.logical_id)
            ),
        )
        for call in calls:
            try:
                call()
            except ClientError as exc:
                meta = exc.response["ResponseMetadata"]
                errors.append(
                    (exc.response["Error"]["Code"], meta["HTTPStatusCode"], meta["RetryAttempts"])
                )
        done.set()
        return {"batchItemFailures": []}

    with stack_with(step, faults="throttle=1") as stack:
        marker["url"] = _marker_queue(stack, "throttle-marker")

        # WHEN a step message is handled
        stack.client("sqs").send_message(QueueUrl=stack.step_queues()[0].url, MessageBody="{}")
        assert done.wait(20)
        counts = _get_json(f"{stack.url}/_local/faults")
        marks = _count_messages(stack, marker["url"])

    # THEN each call got AWS's throttling error, retried once by botocore, and nothing was sent
    assert errors == [
        ("ThrottlingException", 400, 1),
        ("ProvisionedThroughputExceededException", 400, 1),
    ]
    assert counts == {"crash": 0, "duplicate": 0, "throttle": 4}
    assert marks == 0


def test_fault_counts_are_zero_without_faults() -> None:
    # GIVEN a stack without LAMBDAGRAPH_FAULTS WHEN /_local/faults is read
    with stack_with(RecordingHandler(), faults="") as stack:
        counts = _get_json(f"{stack.url}/_local/faults")

    # THEN every count is 0 (the route is the adapter's own: the echo API never saw it)
    assert counts == {"crash": 0, "duplicate": 0, "throttle": 0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("crash=0.2,duplicate=0.3,throttle=0.05", FaultConfig(0.2, 0.3, 0.05)),
        (" throttle = 1 ", FaultConfig(throttle=1.0)),
        ("", FaultConfig()),
    ],
)
def test_fault_settings_are_read(text: str, expected: FaultConfig) -> None:
    # GIVEN / WHEN a LAMBDAGRAPH_FAULTS value is read THEN it gives those probabilities
    assert FaultConfig.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("crash", "expected name=probability"),
        ("crash=2", "between 0 and 1"),
        ("crash=often", "between 0 and 1"),
        ("explode=0.1", "unknown fault 'explode'"),
        ("crash=0.1,crash=0.2", "given twice"),
    ],
)
def test_bad_fault_settings_are_refused(text: str, message: str) -> None:
    # GIVEN / WHEN a bad value is read THEN it is refused with a message saying why
    with pytest.raises(FaultConfigError, match=message):
        FaultConfig.parse(text)


def test_make_run_refuses_bad_faults_and_announces_good_ones() -> None:
    # GIVEN the stack started as users start it
    def start(faults: str) -> tuple[int, str]:
        env = {
            **os.environ,
            "LAMBDAGRAPH_PORT": str(free_port()),
            "LAMBDAGRAPH_FAULTS": faults,
            "LAMBDAGRAPH_LOCAL_TIME_SCALE": "60",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "local stack is up" in line:
                process.terminate()
        process.wait(60)
        return process.returncode, "".join(lines)

    # WHEN it is given a bad LAMBDAGRAPH_FAULTS, and then a good one
    bad_code, bad_output = start("crash=1.5")
    good_code, good_output = start("crash=0.2,throttle=0.05")

    # THEN the first exits 1 saying why; the second warns which faults it injects
    assert bad_code == 1
    assert "could not start the local stack: LAMBDAGRAPH_FAULTS: 'crash' needs a probability" in (
        bad_output
    )
    assert good_code == 0, good_output
    assert "fault injection is ON (LAMBDAGRAPH_FAULTS): crash=0.2, duplicate=0, throttle=0.05" in (
        good_output
    )
    assert "step timings (time scale 60): function timeout 5 s, lease 6 s" in good_output


# --- moto as DynamoDB ---------------------------------------------------------------------------


def _race(writers: list[Any], table: str, key: dict[str, Any]) -> list[str]:
    """Each writer's outcome when all try the same conditional claim at once."""
    outcomes: list[str] = []
    start = threading.Barrier(len(writers))

    def claim(client: Any) -> None:
        start.wait()
        try:
            client.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET claimed = :n",
                ConditionExpression="claimed < :n",
                ExpressionAttributeValues={":n": {"N": "1"}},
            )
            outcomes.append("won")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])

    threads = [threading.Thread(target=claim, args=(writer,)) for writer in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_racing_conditional_writes_never_both_succeed_on_the_stacks_moto() -> None:
    # GIVEN the stack's moto and an item that two writers try to claim at once, many times
    # (plain moto lets both succeed in about 1 race of 40)
    with stack_with(RecordingHandler()) as stack:
        table = "claim-race"
        dynamodb = stack.client("dynamodb")
        dynamodb.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
        writers = [stack.client("dynamodb"), stack.client("dynamodb")]
        races = []
        for trial in range(200):
            key = {"pk": {"S": f"run-{trial}"}}
            dynamodb.put_item(TableName=table, Item={**key, "claimed": {"N": "0"}})

            # WHEN both write at the same moment
            races.append(sorted(_race(writers, table, key)))

    # THEN exactly one write wins every race and the other fails its condition, as on DynamoDB
    assert {tuple(outcomes) for outcomes in races} == {("ConditionalCheckFailedException", "won")}

"""The IAM coverage recorder (tests/aws_calls.py): what a function calls is recorded with the
IAM action and resource it needs, and a session whose functions make a call missing from
the manifest fails, naming it (so the manifest cannot go stale).

Each case runs a small pytest session in a subprocess with the plugin, as the suite loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.aws_calls import iam_requirements, resource_of

REPO_ROOT = Path(__file__).resolve().parents[2]

INNER = """
import boto3
from botocore.stub import Stubber

from functions.settings import Settings
from tests import aws_calls


def test_the_api_reads_a_run_and_lists_payloads():
    settings = Settings(runtime_table="runtime-1", payload_bucket="payloads-1")
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    with Stubber(dynamodb) as db, Stubber(s3) as bucket:
        db.add_response("get_item", {}, {"TableName": "runtime-1", "Key": {"pk": {"S": "a"}}})
        bucket.add_response("list_objects_v2", {}, {"Bucket": "payloads-1", "Prefix": "t/"})
        with aws_calls.invocation("Api", settings):
            dynamodb.get_item(TableName="runtime-1", Key={"pk": {"S": "a"}})
            s3.list_objects_v2(Bucket="payloads-1", Prefix="t/")
        # Outside any handler (a fixture, a poller): not a function's call.
        db.add_response("get_item", {}, {"TableName": "other", "Key": {"pk": {"S": "a"}}})
        dynamodb.get_item(TableName="other", Key={"pk": {"S": "a"}})
"""

CALLS = [
    ["Api", "dynamodb:GetItem", "dynamodb:GetItem", "LAMBDAGRAPH_RUNTIME_TABLE"],
    ["Api", "s3:ListObjectsV2", "s3:ListBucket", "LAMBDAGRAPH_PAYLOAD_BUCKET"],
]


@pytest.fixture(autouse=True)
def _importable_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))


def _run(pytester: pytest.Pytester, manifest: Path, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=INNER)
    return pytester.runpytest_subprocess(
        "-p",
        "tests.aws_calls",
        "-p",
        "no:cacheprovider",
        "--aws-calls-manifest",
        str(manifest),
        *args,
    )


def _manifest(path: Path, calls: list[list[str]]) -> Path:
    entries = [dict(zip(("function", "call", "action", "resource"), c, strict=True)) for c in calls]
    path.write_text(json.dumps({"calls": entries}))
    return path


def test_a_call_missing_from_the_manifest_fails_the_session_and_is_named(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    # GIVEN a manifest that lacks the bucket listing
    manifest = _manifest(tmp_path / "calls.json", CALLS[:1])
    # WHEN a session's function lists the bucket, on an xdist worker (as `make test` runs)
    result = _run(pytester, manifest, "-p", "xdist", "-n", "2")
    # THEN the test passed, yet the session fails, naming the call, its action and resource
    output = result.stdout.str()
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    assert "Api: s3:ListObjectsV2 needs s3:ListBucket on LAMBDAGRAPH_PAYLOAD_BUCKET" in output
    assert "make aws-calls" in output
    assert "dynamodb:GetItem needs" not in output  # listed already


def test_update_writes_the_calls_of_the_session(pytester: pytest.Pytester, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "calls.json", [])
    result = _run(pytester, manifest, "--aws-calls-update")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    written = json.loads(manifest.read_text())["calls"]
    assert [list(entry.values()) for entry in written] == CALLS


def test_a_call_is_named_by_the_iam_actions_it_needs() -> None:
    # A transaction is authorized per item; multi-object delete per key; batches per table.
    transaction = {
        "TransactItems": [
            {"Put": {"TableName": "rt"}},
            {"Update": {"TableName": "rt"}},
            {"ConditionCheck": {"TableName": "cp"}},
        ]
    }
    assert iam_requirements("dynamodb", "TransactWriteItems", transaction) == [
        ("dynamodb:PutItem", "rt"),
        ("dynamodb:UpdateItem", "rt"),
        ("dynamodb:ConditionCheckItem", "cp"),
    ]
    assert iam_requirements("dynamodb", "Query", {"TableName": "rt", "IndexName": "gsi1"}) == [
        ("dynamodb:Query", "rt/index/gsi1")
    ]
    assert iam_requirements("s3", "DeleteObjects", {"Bucket": "b"}) == [("s3:DeleteObject", "b/*")]
    assert iam_requirements("sqs", "SendMessageBatch", {"QueueUrl": "u"}) == [
        ("sqs:SendMessage", "u")
    ]
    assert iam_requirements("states", "StartExecution", {"stateMachineArn": "sm"}) == [
        ("states:StartExecution", "sm")
    ]
    # A task token names no state machine: the approval state machine's setting stands in.
    assert iam_requirements("states", "SendTaskSuccess", {"taskToken": "t"}) == [
        ("states:SendTaskSuccess", "@LAMBDAGRAPH_APPROVAL_STATE_MACHINE_ARN")
    ]
    assert iam_requirements("email", "SendRawEmail", {"Source": "a@b.c"}) == [
        ("ses:SendRawEmail", "a@b.c")
    ]
    assert iam_requirements("states", "ListExecutions", {})[0][0] == "?unmapped"
    assert resource_of("@LAMBDAGRAPH_X", {}) == "LAMBDAGRAPH_X"
    names = {"rt": "LAMBDAGRAPH_RUNTIME_TABLE", "b": "LAMBDAGRAPH_PAYLOAD_BUCKET"}
    assert resource_of("rt/index/gsi1", names) == "LAMBDAGRAPH_RUNTIME_TABLE/index/gsi1"
    assert resource_of("b/*", names) == "LAMBDAGRAPH_PAYLOAD_BUCKET/*"
    assert resource_of("elsewhere", names) == "?elsewhere"

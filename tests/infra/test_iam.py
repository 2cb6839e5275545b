"""GIVEN the synthesized stack THEN each function's role reaches only the resources it uses,
with no wildcard action and no `*` resource except where AWS offers no scoping (X-Ray).

That each grant matches a call the code makes (and each call a grant) is proven in
test_iam_coverage.py; these are the invariants that hold whatever the calls are."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.resources import API_FUNCTION, HOUSEKEEPING_FUNCTION, STEP_WORKER_FUNCTION
from tests.infra.conftest import Synth

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

# AWS offers no resource-level permissions for these.
UNSCOPED_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
# What Step Functions' execution logging and tracing need on "*" (the approval state
# machine's role).
LOG_DELIVERY_ACTIONS = {
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(synth: Synth) -> list[tuple[str, dict[str, Any]]]:
    return [
        (logical_id, statement)
        for logical_id, policy in synth.resources("AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _role_statements(synth: Synth, handler: str) -> list[dict[str, Any]]:
    """Allow statements of the inline policies attached to the role of ``handler``'s function."""
    (fn,) = [
        f
        for f in synth.resources("AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == handler
    ]
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in synth.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Allow"
    ]


def _grants(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """action -> logical ids of the resources it is allowed on (`*` kept as is)."""
    granted: dict[str, set[str]] = {}
    for statement in statements:
        resources = {_resource_id(r) for r in _as_list(statement["Resource"])}
        for action in _as_list(statement["Action"]):
            granted.setdefault(action, set()).update(resources)
    return granted


def _resource_id(resource: Any) -> str:
    if resource == "*":
        return "*"
    if isinstance(resource, dict) and set(resource) == {"Ref"}:
        return str(resource["Ref"])  # a secret: its Ref is its ARN
    text = json.dumps(resource)
    # {"Fn::GetAtt": [id, "Arn"]} or a Join around it (index ARNs, bucket objects).
    marker = '"Fn::GetAtt": ["'
    if marker not in text:
        # A resource whose Ref is its ARN (state machine, secret), or a Join around a Ref
        # (an SES identity's ARN): the first Ref that is not a pseudo parameter.
        refs = [r for r in text.split('"Ref": "')[1:] if not r.startswith("AWS::")]
        return refs[0].split('"', 1)[0]
    start = text.index(marker) + len(marker)
    return text[start : text.index('"', start)]


def test_no_policy_grants_a_wildcard_action(synth: Synth) -> None:
    for logical_id, statement in _statements(synth):
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"{logical_id}: {action}"


def test_only_xray_is_granted_on_every_resource(synth: Synth) -> None:
    machine_role = synth.logical_id(synth.stack.approvals.state_machine.role)
    for logical_id, statement in _statements(synth):
        if "*" in _as_list(statement["Resource"]):
            allowed = set(UNSCOPED_ACTIONS)
            policy = synth.json["Resources"][logical_id]["Properties"]
            if {"Ref": machine_role} in policy["Roles"]:
                allowed |= LOG_DELIVERY_ACTIONS
            assert set(_as_list(statement["Action"])) <= allowed, logical_id


def test_worker_reaches_its_tables_bucket_and_queues_only(synth: Synth) -> None:
    stack = synth.stack
    granted = _grants(_role_statements(synth, STEP_WORKER_FUNCTION.handler))
    tables = {
        synth.logical_id(stack.storage.runtime_table),
        synth.logical_id(stack.storage.checkpoint_table),
        synth.logical_id(stack.storage.cache_table),
        synth.logical_id(stack.storage.memory_table),
    }
    queues = {synth.logical_id(q) for q in stack.queues.queues.values()}

    assert set().union(*(r for a, r in granted.items() if a.startswith("dynamodb:"))) == tables
    assert granted["s3:ListBucket"] == {synth.logical_id(stack.storage.payload_bucket)}
    assert granted["sqs:SendMessage"] == queues
    assert granted["sqs:ReceiveMessage"] == queues  # the event source mappings
    assert granted["sqs:DeleteMessage"] == queues
    assert not any(action.startswith(("kms:", "iam:", "lambda:")) for action in granted)


def test_only_the_worker_reaches_the_node_cache_and_only_in_batches(synth: Synth) -> None:
    # GIVEN the node cache table and every function's role
    cache_id = synth.logical_id(synth.stack.storage.cache_table)
    reaching = {}
    for fn in synth.resources("AWS::Lambda::Function").values():
        handler = fn["Properties"]["Handler"]
        granted = _grants(_role_statements(synth, handler))
        actions = {action for action, resources in granted.items() if cache_id in resources}
        if actions:
            reaching[handler] = actions
    # THEN the step worker (the one that runs nodes) reads and writes it in batches: no
    # Scan, no Query, no other function
    assert reaching == {
        STEP_WORKER_FUNCTION.handler: {"dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"}
    }


def test_only_the_worker_reaches_the_memory_store_with_the_calls_it_makes(synth: Synth) -> None:
    # GIVEN the memory table and every function's role
    memory_id = synth.logical_id(synth.stack.storage.memory_table)
    reaching = {}
    for fn in synth.resources("AWS::Lambda::Function").values():
        handler = fn["Properties"]["Handler"]
        granted = _grants(_role_statements(synth, handler))
        actions = {action for action, resources in granted.items() if memory_id in resources}
        if actions:
            reaching[handler] = actions
    # THEN only the step worker (the one that runs nodes) reaches it, with the calls of
    # functions.memory: no PutItem (puts are UpdateItem, keeping created_at), no GetItem
    assert reaching == {
        STEP_WORKER_FUNCTION.handler: {
            "dynamodb:BatchGetItem",
            "dynamodb:Query",
            "dynamodb:Scan",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
        }
    }


def test_api_enqueues_steps_but_never_consumes_them(synth: Synth) -> None:
    stack = synth.stack
    granted = _grants(_role_statements(synth, API_FUNCTION.handler))
    assert granted["sqs:SendMessage"] == {synth.logical_id(q) for q in stack.queues.queues.values()}
    assert "sqs:ReceiveMessage" not in granted
    assert "sqs:DeleteMessage" not in granted


def test_housekeeping_never_consumes_step_messages(synth: Synth) -> None:
    stack = synth.stack
    granted = _grants(_role_statements(synth, HOUSEKEEPING_FUNCTION.handler))
    assert granted["sqs:SendMessage"] == {synth.logical_id(q) for q in stack.queues.queues.values()}
    assert "sqs:ReceiveMessage" not in granted
    assert "s3:PutObject" not in granted


def test_no_role_may_touch_a_dlq(synth: Synth) -> None:
    # The worker gives up by letting SQS move a message; nobody reads or writes a DLQ.
    dlqs = {synth.logical_id(q) for q in synth.stack.queues.dlqs.values()}
    dlqs.add(synth.logical_id(synth.stack.approvals.dlq))
    for logical_id, statement in _statements(synth):
        resources = {_resource_id(r) for r in _as_list(statement["Resource"]) if r != "*"}
        assert not resources & dlqs, logical_id

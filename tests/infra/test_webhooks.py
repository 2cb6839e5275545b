"""GIVEN the synthesized template THEN completion webhooks are wired as designed: bus with
archive, rule -> deliveries queue (+ DLQ, alarmed), the sender on that queue, the secret, and
grants scoped to these resources."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.resources import (
    EVENT_ARCHIVE_RETENTION_DAYS,
    EVENT_BUS_ENV,
    WEBHOOK_FUNCTION,
    WEBHOOK_QUEUE,
    WEBHOOK_RULE_PATTERN,
)
from tests.infra.conftest import Synth

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def _statements(synth: Synth) -> list[tuple[str, dict[str, Any]]]:
    return [
        (logical_id, statement)
        for logical_id, policy in synth.resources("AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_bus_has_an_archive(synth: Synth) -> None:
    bus_id = synth.logical_id(synth.stack.webhooks.bus)
    (archive,) = synth.resources("AWS::Events::Archive").values()
    assert archive["Properties"]["SourceArn"] == {"Fn::GetAtt": [bus_id, "Arn"]}
    assert archive["Properties"]["RetentionDays"] == EVENT_ARCHIVE_RETENTION_DAYS


def test_the_rule_routes_runs_with_a_webhook_to_the_deliveries_queue(synth: Synth) -> None:
    webhooks = synth.stack.webhooks
    rule = synth.json["Resources"][synth.logical_id(webhooks.rule)]["Properties"]
    assert rule["EventBusName"] == {"Ref": synth.logical_id(webhooks.bus)}
    assert rule["EventPattern"] == WEBHOOK_RULE_PATTERN
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [synth.logical_id(webhooks.queue), "Arn"]}


def test_the_deliveries_queue_has_an_alarmed_dlq(synth: Synth) -> None:
    webhooks = synth.stack.webhooks
    queue = synth.json["Resources"][synth.logical_id(webhooks.queue)]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": [synth.logical_id(webhooks.dlq), "Arn"]
    }
    assert queue["VisibilityTimeout"] == WEBHOOK_QUEUE.visibility_timeout_s
    alarm = synth.json["Resources"][synth.logical_id(webhooks.dlq_alarm)]["Properties"]
    assert json.dumps(alarm).count(synth.stack.resolve(webhooks.dlq.queue_name)["Fn::GetAtt"][0])
    # AND it notifies the alarm topic
    assert alarm["AlarmActions"]


def test_the_sender_is_fed_by_the_deliveries_queue_with_partial_failures(synth: Synth) -> None:
    queue_arn = {"Fn::GetAtt": [synth.logical_id(synth.stack.webhooks.queue), "Arn"]}
    (mapping,) = [
        m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == queue_arn
    ]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == WEBHOOK_QUEUE.batch_size
    functions = synth.resources("AWS::Lambda::Function").values()
    (sender,) = [f for f in functions if f["Properties"]["Handler"] == WEBHOOK_FUNCTION.handler]
    env = sender["Properties"]["Environment"]["Variables"]
    assert "LAMBDAGRAPH_WEBHOOK_SECRET_ARN" in env
    assert "LAMBDAGRAPH_WEBHOOK_SECRET" not in env  # never a secret in the environment
    # AND every function knows the bus (each may finish a run's ending)
    for fn in functions:
        assert fn["Properties"]["Environment"]["Variables"][EVENT_BUS_ENV] == {
            "Ref": synth.logical_id(synth.stack.webhooks.bus)
        }


def test_put_events_is_granted_on_this_bus_only(synth: Synth) -> None:
    bus = {"Fn::GetAtt": [synth.logical_id(synth.stack.webhooks.bus), "Arn"]}
    found = 0
    for logical_id, statement in _statements(synth):
        if "events:PutEvents" in _as_list(statement["Action"]):
            found += 1
            assert _as_list(statement["Resource"]) == [bus], logical_id
    assert found >= 3  # API, step worker, housekeeping


def test_only_the_sender_reads_the_secret_and_writes_its_dlq(synth: Synth) -> None:
    webhooks = synth.stack.webhooks
    secret = {"Ref": synth.logical_id(webhooks.secret)}
    dlq = {"Fn::GetAtt": [synth.logical_id(webhooks.dlq), "Arn"]}
    sender_role = synth.stack.resolve(webhooks.sender.function.role.role_name)["Ref"]  # type: ignore[union-attr]
    for _, policy in synth.resources("AWS::IAM::Policy").items():
        roles = policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            resources = _as_list(statement["Resource"])
            if secret in resources or dlq in resources:
                assert roles == [{"Ref": sender_role}]
                assert set(_as_list(statement["Action"])) <= {
                    "secretsmanager:GetSecretValue",
                    "sqs:SendMessage",
                }

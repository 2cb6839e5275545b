"""GIVEN the synthesized template THEN human approval is deployed as the local stack runs it:
the state machine from the one definition file, its queue (with an alarmed DLQ) feeding the
notifier's alias, the signing key in Secrets Manager, the SES sender, execution logging
without execution data (task tokens are secrets), and a canary release for the notifier."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.approvals import QUEUE_URL_PLACEHOLDER, STATE_MACHINE_FILE
from functions.resources import APPROVAL_NOTIFIER_FUNCTION, APPROVAL_QUEUE
from tests.infra.conftest import Synth

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]


def _only(synth: Synth, cfn_type: str) -> dict[str, Any]:
    (resource,) = synth.resources(cfn_type).values()
    return dict(resource["Properties"])


def test_state_machine_is_the_shared_definition_file(synth: Synth) -> None:
    props = _only(synth, "AWS::StepFunctions::StateMachine")
    assert props["StateMachineType"] == "STANDARD"
    # The definition is the file's text with only the queue URL substituted.
    definition = props["DefinitionString"]
    parts = definition["Fn::Join"][1] if isinstance(definition, dict) else [definition]
    text = "".join(p if isinstance(p, str) else QUEUE_URL_PLACEHOLDER for p in parts)
    subs = props.get("DefinitionSubstitutions")
    if subs:
        assert set(subs) == {QUEUE_URL_PLACEHOLDER.strip("${}")}
    assert json.loads(text) == json.loads(STATE_MACHINE_FILE.read_text())
    queue_id = synth.logical_id(synth.stack.approvals.queue)
    assert queue_id in json.dumps(props)
    # Every event logged, no execution data (inputs and outputs carry task tokens).
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert props["TracingConfiguration"] == {"Enabled": True}


def test_the_state_machine_may_only_send_to_the_approval_queue(synth: Synth) -> None:
    role = synth.logical_id(synth.stack.approvals.state_machine.role)
    queue_id = synth.logical_id(synth.stack.approvals.queue)
    sqs = [
        s
        for p in synth.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if "sqs" in json.dumps(s["Action"])
    ]
    assert len(sqs) == 1
    assert sqs[0]["Action"] == "sqs:SendMessage"
    assert sqs[0]["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}


def test_approval_queue_feeds_the_notifier_alias_and_its_dlq_alarms(synth: Synth) -> None:
    queue_id = synth.logical_id(synth.stack.approvals.queue)
    dlq_id = synth.logical_id(synth.stack.approvals.dlq)
    queue = synth.json["Resources"][queue_id]["Properties"]
    assert queue["VisibilityTimeout"] == APPROVAL_QUEUE.visibility_timeout_s
    assert queue["VisibilityTimeout"] >= 6 * APPROVAL_NOTIFIER_FUNCTION.timeout_s
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    (mapping,) = [
        m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    ]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    alias_id = synth.logical_id(synth.stack.notifier.handler.alias)
    assert alias_id in json.dumps(mapping["FunctionName"])
    alarms = [
        a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if dlq_id in json.dumps(a["Properties"])
    ]
    assert len(alarms) == 1
    assert "DIFF" in json.dumps(alarms[0])


def test_notifier_environment_signing_key_and_sender(synth: Synth) -> None:
    (fn,) = [
        f["Properties"]
        for f in synth.resources("AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == APPROVAL_NOTIFIER_FUNCTION.handler
    ]
    env = fn["Environment"]["Variables"]
    secret_id = synth.logical_id(synth.stack.approvals.signing_key)
    assert env["LAMBDAGRAPH_APPROVAL_SIGNING_SECRET_ARN"] == {"Ref": secret_id}
    assert "LAMBDAGRAPH_APPROVAL_SIGNING_KEY" not in env  # never a plain key on AWS
    api_id = synth.logical_id(synth.stack.api.rest_api)
    assert api_id in json.dumps(env["LAMBDAGRAPH_PUBLIC_BASE_URL"])
    secret = synth.json["Resources"][secret_id]["Properties"]
    assert secret["GenerateSecretString"]["PasswordLength"] >= 32
    identity = _only(synth, "AWS::SES::EmailIdentity")
    assert env["LAMBDAGRAPH_APPROVAL_SENDER"] == {
        "Ref": synth.logical_id(synth.stack.approvals.sender)
    }
    assert "@" in identity["EmailIdentity"]


def test_notifier_is_released_as_a_canary(synth: Synth) -> None:
    groups = synth.stack.deployments.groups
    assert APPROVAL_NOTIFIER_FUNCTION.logical_id in groups

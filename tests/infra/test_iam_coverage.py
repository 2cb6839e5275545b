"""GIVEN the AWS calls each function makes in the test suite (tests/infra/aws_calls.json,
recorded by tests/aws_calls.py) THEN the synthesized template lets each function's role make
every one of them on its resource, and allows nothing that no call (nor Lambda itself, for
the function's event sources and traces) uses.

moto enforces no IAM: this is what stands between a missing grant and an AccessDenied on
AWS (``DELETE /threads/{id}`` needed ``s3:ListBucket`` on the bucket, which the template did
not grant). The manifest cannot go stale: a session that records a call missing from it
fails (tests/aws_calls.py); ``make aws-calls`` regenerates it.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest

from functions import resources
from functions.resources import STEP_QUEUES, FunctionSpec
from tests.aws_calls import UNMAPPED, Call, load_manifest
from tests.infra.conftest import Synth

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

FUNCTION_SPECS = [v for v in vars(resources).values() if isinstance(v, FunctionSpec)]
# A run's priority is data: a call on one step queue stands for the same call on any.
STEP_QUEUE_SETTINGS = {spec.env_var for spec in STEP_QUEUES.values()}
# What Lambda does with the function's role, not the function's code.
TRACES = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
# Lambda's SQS poller (AWS Lambda Developer Guide, "Execution role permissions" for SQS).
EVENT_SOURCE_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}

Grant = tuple[str, str]  # (action, resource ARN pattern)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _render(value: Any) -> str:
    """A CloudFormation ARN expression as a pattern: ``arn:<LogicalId>`` for a resource's
    ARN, ``<Pseudo>`` for a Ref; IAM's own ``*`` kept."""
    if isinstance(value, str):
        return value
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        assert attribute == "Arn", value
        return f"arn:<{logical_id}>"
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_render(part) for part in parts)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    raise AssertionError(f"unexpected ARN expression {value}")


def _function(synth: Synth, spec: FunctionSpec) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, fn["Properties"])
        for logical_id, fn in synth.resources("AWS::Lambda::Function").items()
        if fn["Properties"]["Handler"] == spec.handler
    ]
    return found


def _grants(synth: Synth, function: dict[str, Any]) -> set[Grant]:
    """Every (action, resource) the function's role allows through inline policies."""
    role_id = function["Role"]["Fn::GetAtt"][0]
    documents = [
        policy["Properties"]["PolicyDocument"]
        for policy in synth.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
    ]
    role = synth.json["Resources"][role_id]["Properties"]
    documents += [p["PolicyDocument"] for p in role.get("Policies", [])]
    grants: set[Grant] = set()
    for document in documents:
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow", statement
            for action in _as_list(statement["Action"]):
                for resource in _as_list(statement["Resource"]):
                    grants.add((action, _render(resource)))
    return grants


def _event_source_queues(synth: Synth, function_id: str) -> set[str]:
    """ARN patterns of the queues whose event source mappings invoke the function."""
    queues = set()
    for mapping in synth.resources("AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        target = json.dumps(props["FunctionName"])
        alias_ids = [
            logical_id
            for logical_id, alias in synth.resources("AWS::Lambda::Alias").items()
            if alias["Properties"]["FunctionName"] == {"Ref": function_id}
        ]
        if function_id in target or any(alias in target for alias in alias_ids):
            queues.add(_render(props["EventSourceArn"]))
    return queues


def _calls_of(manifest: set[Call], spec: FunctionSpec) -> list[tuple[str, str, str]]:
    """(call, action, resource) of the function, a step queue expanded to all of them."""
    calls = []
    for function, call, action, resource in sorted(manifest):
        if function != spec.logical_id:
            continue
        setting, slash, rest = resource.partition("/")
        settings = sorted(STEP_QUEUE_SETTINGS) if setting in STEP_QUEUE_SETTINGS else [setting]
        calls += [(call, action, f"{s}{slash}{rest}") for s in settings]
    return calls


# Resources whose Ref is their ARN already (tables and queues give a name or URL).
_REF_IS_ARN = {"AWS::StepFunctions::StateMachine", "AWS::SecretsManager::Secret"}
# An SES identity (its Ref is the address) is authorized as ``identity/<address>``.
_SES_IDENTITY_ARN = "arn:<AWS::Partition>:ses:<AWS::Region>:<AWS::AccountId>:identity/<{}>"


def _resource_arn(environment: dict[str, Any], resource: str, synth: Synth | None = None) -> str:
    """The ARN (as ``_render`` writes it) of ``<setting>[/suffix]`` for this function."""
    setting, slash, rest = resource.partition("/")
    assert setting in environment, f"the function's environment has no {setting}"
    value = environment[setting]
    assert isinstance(value, dict), f"{setting} = {value}: not a resource of the stack"
    assert "Ref" in value, f"{setting} = {value}: not a resource of the stack"
    suffix = f"{slash}{rest}".replace("/*", "/any-key")
    kind = synth.json["Resources"].get(value["Ref"], {}).get("Type") if synth else None
    if kind in _REF_IS_ARN:
        return f"<{value['Ref']}>{suffix}"
    if kind == "AWS::SES::EmailIdentity":
        return _SES_IDENTITY_ARN.format(value["Ref"])
    return f"arn:<{value['Ref']}>{suffix}"


def _allows(grants: set[Grant], action: str, arn: str) -> bool:
    return any(fnmatchcase(action, a) and fnmatchcase(arn, r) for a, r in grants)


@pytest.fixture(scope="module")
def manifest() -> set[Call]:
    calls = load_manifest()
    assert calls, "tests/infra/aws_calls.json is missing or empty: run `make aws-calls`"
    return calls


def test_the_manifest_names_every_call_and_resource(manifest: set[Call]) -> None:
    unknown = [call for call in manifest if call[2] == UNMAPPED or call[3].startswith("?")]
    assert not unknown, (
        "calls whose IAM action (tests/aws_calls.py iam_requirements) or resource (no setting "
        f"names it) is unknown: {unknown}"
    )
    functions = {call[0] for call in manifest}
    assert functions <= {spec.logical_id for spec in FUNCTION_SPECS}


@pytest.mark.parametrize("spec", FUNCTION_SPECS, ids=lambda s: s.logical_id)
def test_each_call_a_function_makes_is_allowed_on_its_resource(
    synth: Synth, manifest: set[Call], spec: FunctionSpec
) -> None:
    # GIVEN the function's role and environment in the template
    _, function = _function(synth, spec)
    grants = _grants(synth, function)
    environment = function["Environment"]["Variables"]
    # WHEN each call it makes is checked against its grants
    denied = [
        f"{call} needs {action} on {resource}"
        for call, action, resource in _calls_of(manifest, spec)
        if not _allows(grants, action, _resource_arn(environment, resource, synth))
    ]
    # THEN none would be denied on AWS
    assert not denied, f"{spec.logical_id} would get AccessDenied for: {denied}"


@pytest.mark.parametrize("spec", FUNCTION_SPECS, ids=lambda s: s.logical_id)
def test_a_function_is_allowed_nothing_it_never_calls(
    synth: Synth, manifest: set[Call], spec: FunctionSpec
) -> None:
    # GIVEN what the function's role allows, and what the function and Lambda call with it
    function_id, function = _function(synth, spec)
    environment = function["Environment"]["Variables"]
    needed = [
        (action, _resource_arn(environment, resource, synth))
        for _call, action, resource in _calls_of(manifest, spec)
    ]
    platform = {(action, "*") for action in TRACES} | {
        (action, queue)
        for action in EVENT_SOURCE_ACTIONS
        for queue in _event_source_queues(synth, function_id)
    }
    # THEN every grant is used by a call (on a resource it matches) or by Lambda itself
    unused = sorted(
        (action, pattern)
        for action, pattern in _grants(synth, function)
        if (action, pattern) not in platform
        and not any(a == action and fnmatchcase(arn, pattern) for a, arn in needed)
    )
    assert not unused, f"{spec.logical_id} is allowed what no call uses: {unused}"

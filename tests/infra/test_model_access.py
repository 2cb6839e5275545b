"""Model access is granted for exactly the models a deployment names, to the step worker only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions.resources import STEP_WORKER_FUNCTION

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

CONTEXT = {
    "stackName": "LambdaGraphModels",
    "chatModel": "openai:gpt-4o-mini",
    "models": json.dumps({"support.classify": "bedrock:amazon.nova-micro-v1:0"}),
    "runModels": "bedrock:us.amazon.nova-lite-v1:0",
    "modelLimits": json.dumps(
        {"gpt-4o-mini": {"rpm": 100, "fallback": "bedrock:anthropic.claude-3-haiku-20240307-v1:0"}}
    ),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    from infra.app import build_app
    from infra.bundling import assemble_asset

    root = tmp_path_factory.mktemp("cdk-models")
    asset = assemble_asset(None, out=root / "asset")
    app, stack = build_app(asset, context=dict(CONTEXT), outdir=str(root / "cdk.out"))
    app.synth()  # cdk-nag runs: an unacknowledged finding raises here
    return dict(json.loads(json.dumps(Template.from_stack(stack).to_json())))


def _statements(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Policy statements by the role they are attached to (its logical id)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        for role in resource["Properties"]["Roles"]:
            out.setdefault(role["Ref"], []).extend(
                resource["Properties"]["PolicyDocument"]["Statement"]
            )
    return out


def _worker_role(template: dict[str, Any]) -> str:
    (role,) = [
        f["Properties"]["Role"]["Fn::GetAtt"][0]
        for f in template["Resources"].values()
        if f["Type"] == "AWS::Lambda::Function"
        and f["Properties"].get("Handler") == STEP_WORKER_FUNCTION.handler
    ]
    return str(role)


def test_bedrock_is_granted_on_the_named_models_to_the_worker_only(
    template: dict[str, Any],
) -> None:
    statements = _statements(template)
    worker = _worker_role(template)
    bedrock = [
        s for s in statements[worker] if "bedrock:InvokeModel" in json.dumps(s.get("Action"))
    ]
    (grant,) = bedrock
    assert sorted(grant["Action"]) == [
        "bedrock:InvokeModel",
        "bedrock:InvokeModelWithResponseStream",
    ]
    resources = json.dumps(grant["Resource"])
    for model in (
        "foundation-model/amazon.nova-micro-v1:0",
        "foundation-model/anthropic.claude-3-haiku-20240307-v1:0",  # a fallback
        "inference-profile/us.amazon.nova-lite-v1:0",  # a run may pick it
        ":bedrock:*::foundation-model/amazon.nova-lite-v1:0",  # where the profile routes
    ):
        assert model in resources, model
    assert "foundation-model/*" not in resources
    # AND no other role may call Bedrock
    for role, role_statements in statements.items():
        if role != worker:
            assert "bedrock:" not in json.dumps(role_statements), role


def test_the_openai_key_is_a_secret_only_the_worker_reads(template: dict[str, Any]) -> None:
    secrets = {
        logical_id: r
        for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::SecretsManager::Secret"
        and "OpenAI" in r["Properties"].get("Description", "")
    }
    (secret_id,) = secrets
    # never a value in the template: the key is put in the secret after the deploy
    assert "SecretString" not in secrets[secret_id]["Properties"]
    worker = _worker_role(template)
    readers = [
        role
        for role, statements in _statements(template).items()
        if secret_id in json.dumps(statements)
    ]
    assert readers == [worker]
    for fn in template["Resources"].values():
        if fn["Type"] == "AWS::Lambda::Function" and "Environment" in fn["Properties"]:
            env = fn["Properties"]["Environment"]["Variables"]
            assert env.get("LAMBDAGRAPH_OPENAI_API_KEY_SECRET_ARN") == {"Ref": secret_id}
            assert env["LAMBDAGRAPH_CHAT_MODEL"] == "openai:gpt-4o-mini"


def test_a_deployment_on_the_offline_model_grants_no_model_access(
    synth: Any,
) -> None:
    # The suite's main template names no model (tests/infra/conftest.py)
    text = json.dumps(synth.json)
    assert "bedrock:" not in text
    assert "OPENAI_API_KEY_SECRET_ARN" not in text


def test_an_unknown_model_in_the_context_fails_the_synth(tmp_path: Path) -> None:
    from infra.stack import StackConfig

    with pytest.raises(ValueError, match="unknown provider"):
        StackConfig(asset_dir=tmp_path, models=json.dumps({"classify": "acme:rocket"}))

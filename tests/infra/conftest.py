"""The CDK template, synthesized once per test session (xdist group ``infra``: one worker).

The app is built exactly as ``make synth`` builds it (``infra.app.build_app``, cdk-nag
attached), except that the code asset holds only the project's packages, not the pip-built
dependencies: the template is the same and the tests stay offline and fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# What the test deployment is given as CDK context (as `make deploy ... ` would pass it).
TTL_DAYS = 7
ALARM_EMAIL = "ops@example.com"
CORS_ORIGINS = ("https://studio.example.com", "http://localhost:3000")
CONTEXT: dict[str, Any] = {
    "ttlDays": TTL_DAYS,
    "alarmEmail": ALARM_EMAIL,
    "stackName": "LambdaGraphTest",
    "corsOrigins": ",".join(CORS_ORIGINS),
    "budgetMaxTokens": 200_000,
    "modelPrices": '{"house-model": {"input": 0.5, "output": 1.5}}',
}


@dataclass(frozen=True)
class Synth:
    app: Any  # aws_cdk.App
    stack: Any  # infra.stack.LambdaGraphStack
    template: Any  # aws_cdk.assertions.Template
    json: dict[str, Any]
    outdir: Path

    def resources(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.json["Resources"].items()
            if resource["Type"] == cfn_type
        }

    def logical_id(self, construct: Any) -> str:
        """Logical id of a construct's CloudFormation resource."""
        element = getattr(construct.node, "default_child", None) or construct
        return str(self.stack.resolve(element.logical_id))


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    from aws_cdk.assertions import Template

    from infra.app import build_app
    from infra.bundling import assemble_asset

    root = tmp_path_factory.mktemp("cdk")
    asset = assemble_asset(None, out=root / "asset")
    app, stack = build_app(asset, context=dict(CONTEXT), outdir=str(root / "cdk.out"))
    # Synthesis runs the cdk-nag validation plugin: an unacknowledged finding raises here.
    app.synth()
    template = Template.from_stack(stack)
    return Synth(
        app=app,
        stack=stack,
        template=template,
        json=json.loads(json.dumps(template.to_json())),
        outdir=root / "cdk.out",
    )

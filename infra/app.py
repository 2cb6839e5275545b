"""The CDK app: ``cdk synth`` / ``cdk deploy`` run ``python -m infra.app`` (see cdk.json).

Context parameters (``-c name=value``): ``ttlDays`` (default 30, 0 = keep forever),
``logLevel`` (INFO), ``alarmEmail`` (unset = alarms without notifications), ``retainData``
(true: tables and bucket survive ``cdk destroy``), ``stackName`` (LambdaGraph), ``corsOrigins``
(comma-separated origins whose pages may call the API; ``*`` for any; unset = none),
``approvalSender`` (the SES sender of approval emails), ``reviewers`` (comma-separated default
reviewers), ``publicBaseUrl`` (approval links' base; unset = the API's URL).
cdk-nag's AwsSolutions pack runs as a CDK validation plugin: an unacknowledged finding fails synth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.bundling import build_asset
from infra.stack import LambdaGraphStack, StackConfig

DEFAULT_STACK_NAME = "LambdaGraph"


def config_from_context(app: App, asset_dir: Path) -> StackConfig:
    def ctx(name: str, default: Any) -> Any:
        value = app.node.try_get_context(name)
        return default if value is None else value

    email = ctx("alarmEmail", "") or None
    origins = tuple(
        origin.strip().rstrip("/")
        for origin in str(ctx("corsOrigins", "")).split(",")
        if origin.strip()
    )
    return StackConfig(
        asset_dir=asset_dir,
        ttl_days=int(ctx("ttlDays", 30)),
        log_level=str(ctx("logLevel", "INFO")),
        alarm_email=str(email) if email else None,
        retain_data=str(ctx("retainData", "true")).lower() != "false",
        cors_origins=origins,
        approval_sender=str(ctx("approvalSender", "approvals@example.com")),
        reviewers=str(ctx("reviewers", "")),
        public_base_url=str(ctx("publicBaseUrl", "")).rstrip("/"),
        budget_max_steps=int(ctx("budgetMaxSteps", 0)),
        budget_max_tokens=int(ctx("budgetMaxTokens", 0)),
        budget_max_cost_usd=float(ctx("budgetMaxCostUsd", 0)),
        model_prices=str(ctx("modelPrices", "")),
        model_limits=str(ctx("modelLimits", "")),
        chat_model=str(ctx("chatModel", "")),
        models=str(ctx("models", "")),
        run_models=str(ctx("runModels", "")),
    )


def build_app(
    asset_dir: Path, *, context: dict[str, Any] | None = None, outdir: str | None = None
) -> tuple[App, LambdaGraphStack]:
    """The app with its one stack and cdk-nag attached (tests call this with a small asset)."""
    app = App(context=context or {}, outdir=outdir)
    stack = LambdaGraphStack(
        app,
        str(app.node.try_get_context("stackName") or DEFAULT_STACK_NAME),
        config=config_from_context(app, asset_dir),
        description="lambdagraph: LangGraph agents on API Gateway, SQS, Lambda and DynamoDB",
        env=Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        ),
    )
    attach_nag(app)
    return app, stack


def attach_nag(app: App) -> None:
    """Run cdk-nag's AwsSolutions pack in synthesis: a finding not acknowledged fails it."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def main() -> None:
    # The context (cdk.json, -c) says which model providers the deployment names: their
    # SDKs go into the bundle (the offline model needs none).
    from functions.models.factory import parse_spec

    specs = config_from_context(App(), Path(".")).model_specs()
    app, _stack = build_app(build_asset(providers={parse_spec(s)[0] for s in specs}))
    app.synth()


if __name__ == "__main__":
    main()

"""Model access for the step worker, for exactly the models the deployment names.

- Bedrock: ``bedrock:InvokeModel`` (Converse) and ``bedrock:InvokeModelWithResponseStream``
  (ConverseStream) on the foundation models named — a cross-region inference profile
  (``us.``/``eu.``/``apac.``/``global.`` prefix) also on the profile, and on its model in the
  regions the profile routes to.
- OpenAI: a Secrets Manager secret for the API key (created empty-valued: put the key in it
  after the first deploy, docs/deploy.md), readable by the step worker only, named to it by
  ``LAMBDAGRAPH_OPENAI_API_KEY_SECRET_ARN``.

Nothing at all when no such model is named: a deployment on the offline model grants none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constructs.nag import acknowledge

INFERENCE_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.")
OPENAI_SECRET_ENV = "LAMBDAGRAPH_OPENAI_API_KEY_SECRET_ARN"


def named_specs(
    chat_model: str, models: dict[str, str], run_models: Iterable[str], fallbacks: Iterable[str]
) -> set[str]:
    """Every ``provider:model`` a deployment may make."""
    specs = {chat_model} if chat_model else set()
    return specs | set(models.values()) | set(run_models) | set(fallbacks)


def bedrock_resource_arns(stack: Stack, model_ids: Iterable[str]) -> list[str]:
    arns: set[str] = set()
    for model_id in model_ids:
        if model_id.startswith(INFERENCE_PROFILE_PREFIXES):
            base = model_id.split(".", 1)[1]
            arns.add(
                stack.format_arn(
                    service="bedrock", resource="inference-profile", resource_name=model_id
                )
            )
            # A profile routes to the model in the regions of its geography.
            arns.add(f"arn:{stack.partition}:bedrock:*::foundation-model/{base}")
        else:
            arns.add(
                stack.format_arn(
                    service="bedrock",
                    account="",
                    resource="foundation-model",
                    resource_name=model_id,
                )
            )
    return sorted(arns)


class ModelAccess(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, specs: set[str]) -> None:
        super().__init__(scope, construct_id)
        from functions.models.factory import parse_spec

        parsed = [parse_spec(spec) for spec in sorted(specs)]
        self.bedrock_model_ids = sorted({m for p, m in parsed if p == "bedrock"})
        self.openai_secret: secretsmanager.Secret | None = None
        if any(p == "openai" for p, _ in parsed):
            self.openai_secret = secretsmanager.Secret(
                self,
                "OpenAIApiKey",
                description="lambdagraph: the OpenAI API key (put it here after the first deploy)",
            )
            acknowledge(
                self.openai_secret,
                {
                    "AwsSolutions-SMG4": (
                        "A provider API key is rotated at the provider, then stored here by "
                        "hand (docs/deploy.md); Secrets Manager cannot rotate it."
                    )
                },
            )

    def environment(self) -> dict[str, str]:
        if self.openai_secret is None:
            return {}
        return {OPENAI_SECRET_ENV: self.openai_secret.secret_arn}

    def grant(self, fn: Any) -> None:
        """What the step worker (a ``ServiceFunction``) needs to call the named models."""
        stack = Stack.of(self)
        if self.bedrock_model_ids:
            arns = bedrock_resource_arns(stack, self.bedrock_model_ids)
            iam.Grant.add_to_principal(
                grantee=fn.alias,
                actions=["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
                resource_arns=arns,
            )
            wildcard = [
                f"AwsSolutions-IAM5[Resource::{arn.replace(stack.partition, '<AWS::Partition>')}]"
                for arn in arns
                if ":*::" in arn
            ]
            if wildcard:
                reason = (
                    "A cross-region inference profile invokes its model in any region of its "
                    "geography: the model's ARN names every region, the model id is exact."
                )
                acknowledge(fn, dict.fromkeys(wildcard, reason))
        if self.openai_secret is not None:
            self.openai_secret.grant_read(fn.alias)

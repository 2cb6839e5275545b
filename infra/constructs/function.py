"""One Lambda function of lambdagraph: the shared code asset, a handler string, an alias.

Every function uses the same ``lambda_.Code`` object (one asset, only the handler differs;
the stream function adds AWS's Lambda Web Adapter layer, ``infra.constructs.streaming``),
Python 3.12 (``infra.bundling.LAMBDA_PYTHON``) on arm64, X-Ray tracing, a log group with retention, and a ``live`` alias on the
current version: event sources and the API invoke the alias, so CodeDeploy can shift it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from functions.resources import LOG_RETENTION_DAYS, FunctionSpec
from infra.bundling import LAMBDA_PYTHON
from infra.constructs.nag import acknowledge

ALIAS_NAME = "live"
# The runtime matching the Python the bundle is built (and byte-compiled) for.
_RUNTIMES = {"3.12": lambda_.Runtime.PYTHON_3_12, "3.13": lambda_.Runtime.PYTHON_3_13}
RUNTIME = _RUNTIMES[LAMBDA_PYTHON]


class ServiceFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        spec: FunctionSpec,
        *,
        code: lambda_.Code,
        environment: Mapping[str, str],
        layers: Sequence[lambda_.ILayerVersion] = (),
    ) -> None:
        super().__init__(scope, spec.logical_id)
        self.spec = spec
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention_days(LOG_RETENTION_DAYS),
            # Logs are diagnostics, not data: they go with the stack.
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=spec.handler,
            code=code,
            timeout=Duration.seconds(spec.timeout_s),
            memory_size=spec.memory_mb,
            tracing=lambda_.Tracing.ACTIVE,
            environment=dict(environment),
            log_group=self.log_group,
            reserved_concurrent_executions=spec.reserved_concurrency,
            layers=list(layers) or None,
            description=f"lambdagraph {spec.logical_id} ({spec.handler})",
        )
        self.alias = lambda_.Alias(
            self, "Live", alias_name=ALIAS_NAME, version=self.function.current_version
        )
        acknowledge(
            self,
            {
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": (
                    "AWS's basic execution policy only lets the function write its own logs."
                ),
                "AwsSolutions-IAM5[Resource::*]": (
                    "X-Ray PutTraceSegments/PutTelemetryRecords support no resource scoping."
                ),
                "AwsSolutions-L1": (
                    "The project targets Python 3.12: the code asset's binary wheels are built for cp312."
                ),
            },
        )


_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    90: logs.RetentionDays.THREE_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


def retention_days(days: int) -> logs.RetentionDays:
    """CDK's RetentionDays for a day count (CloudWatch accepts only some values)."""
    if days not in _RETENTION:
        raise ValueError(f"log retention {days} days: use one of {sorted(_RETENTION)}")
    return _RETENTION[days]

"""Safe releases: each function's ``live`` alias is shifted by CodeDeploy as a canary.

10% of invocations go to the new version for 5 minutes; the deployment rolls back by itself
when one of its alarms fires: the canary alarms of ``infra.constructs.monitoring`` (the new
version's Lambda errors; for the API its answered 5xx, for the step worker failed step
attempts). DLQ alarms are not among them: a failing step reaches a DLQ only after
5 x 1,800 s, and a DLQ keeps what the worker gave up on until someone redrives it.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_codedeploy as codedeploy
from constructs import Construct

from infra.constructs.function import ServiceFunction
from infra.constructs.nag import acknowledge

DEPLOYMENT_CONFIG = codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES


class CanaryDeployments(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.application = codedeploy.LambdaApplication(self, "Application")
        self.groups: dict[str, codedeploy.LambdaDeploymentGroup] = {}

    def add(
        self, fn: ServiceFunction, alarms: Sequence[cw.IAlarm]
    ) -> codedeploy.LambdaDeploymentGroup:
        group = codedeploy.LambdaDeploymentGroup(
            self,
            fn.spec.logical_id,
            application=self.application,
            alias=fn.alias,
            deployment_config=DEPLOYMENT_CONFIG,
            alarms=list(alarms),
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
        )
        acknowledge(
            group,
            {
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited]": (
                    "AWS's policy for CodeDeploy to shift Lambda aliases and read the rollback alarms."
                ),
            },
        )
        self.groups[fn.spec.logical_id] = group
        return group

"""Human approval on AWS: the state machine, the approval-requests queue, the notifier, the
signing key and the SES sender.

- The state machine (Standard) is ``functions/approvals/state_machine.asl.json`` itself, the
  file the local stack registers, with the queue URL substituted. Execution logging goes to
  its own log group (every event) without execution data: inputs and outputs carry task
  tokens, which are secrets.
- The approval-requests queue (with its DLQ, alarmed on arrivals) carries the state
  machine's token and resume messages to the notifier (event source on its ``live`` alias,
  partial batch failures).
- The link signing key is a generated Secrets Manager secret; the SES sender an email
  identity (verify it by the email AWS sends; out of the SES sandbox, any reviewer can be
  mailed).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ses as ses
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.approvals import QUEUE_URL_PLACEHOLDER, STATE_MACHINE_FILE
from functions.resources import (
    APPROVAL_NOTIFIER_FUNCTION,
    APPROVAL_QUEUE,
    APPROVAL_STATE_MACHINE_LOGICAL_ID,
    LOG_RETENTION_DAYS,
)
from infra.constructs.function import ServiceFunction, retention_days
from infra.constructs.nag import acknowledge
from infra.constructs.worker import EVENT_SOURCE_ACTIONS

# The definition's placeholder name (``${ApprovalQueueUrl}``) as CDK substitutes it.
_SUBSTITUTION = QUEUE_URL_PLACEHOLDER.strip("${}")


class ApprovalResources(Construct):
    """What every function's environment names: created before the functions."""

    def __init__(self, scope: Construct, construct_id: str, *, sender: str) -> None:
        super().__init__(scope, construct_id)
        self.dlq = sqs.Queue(
            self,
            f"{APPROVAL_QUEUE.logical_id}Dlq",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            APPROVAL_QUEUE.logical_id,
            visibility_timeout=Duration.seconds(APPROVAL_QUEUE.visibility_timeout_s),
            retention_period=Duration.seconds(APPROVAL_QUEUE.retention_s),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=APPROVAL_QUEUE.max_receive_count
            ),
        )
        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            retention=retention_days(LOG_RETENTION_DAYS),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            APPROVAL_STATE_MACHINE_LOGICAL_ID,
            # Inline (from_file would upload it as an asset): the template shows the definition.
            definition_body=sfn.DefinitionBody.from_string(STATE_MACHINE_FILE.read_text()),
            definition_substitutions={_SUBSTITUTION: self.queue.queue_url},
            state_machine_type=sfn.StateMachineType.STANDARD,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group,
                level=sfn.LogLevel.ALL,
                include_execution_data=False,
            ),
        )
        # The definition comes from a file: CDK cannot infer the role's needs from it.
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.queue.queue_arn])
        )
        self.signing_key = secretsmanager.Secret(
            self,
            "SigningKey",
            description="lambdagraph approval link signing key (HMAC-SHA256)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True
            ),
        )
        self.sender = ses.EmailIdentity(self, "Sender", identity=ses.Identity.email(sender))
        self.dlq_alarm = cw.Alarm(
            self,
            "DlqArrivals",
            alarm_description=(
                "Approval messages arrived in the approval-requests DLQ (a reviewer was not "
                "emailed, or a decided approval did not resume its thread). Look at the "
                "message's approval id, then redrive."
            ),
            metric=cw.MathExpression(
                expression="DIFF(FILL(visible, 0))",
                using_metrics={
                    "visible": self.dlq.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", period=Duration.minutes(1)
                    )
                },
                period=Duration.minutes(1),
                label="approval DLQ arrivals",
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        acknowledge(
            self,
            {
                "AwsSolutions-SMG4": (
                    "Rotating the signing key invalidates every link already emailed; it is "
                    "rotated by hand when needed (docs/deploy.md, Human approval)."
                ),
                "AwsSolutions-IAM5[Resource::*]": (
                    "Step Functions' log delivery and X-Ray actions support no resource scoping."
                ),
            },
        )

    def environment(self) -> dict[str, str]:
        return {
            "LAMBDAGRAPH_APPROVAL_STATE_MACHINE_ARN": self.state_machine.state_machine_arn,
            APPROVAL_QUEUE.env_var: self.queue.queue_url,
            "LAMBDAGRAPH_APPROVAL_SIGNING_SECRET_ARN": self.signing_key.secret_arn,
            "LAMBDAGRAPH_APPROVAL_SENDER": self.sender.email_identity_name,
        }


class ApprovalNotifier(Construct):
    """The notifier function, fed by the approval-requests queue."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
        environment: Mapping[str, str],
        resources: ApprovalResources,
    ) -> None:
        super().__init__(scope, construct_id)
        self.handler = ServiceFunction(
            self, APPROVAL_NOTIFIER_FUNCTION, code=code, environment=environment
        )
        self.handler.alias.add_event_source_mapping(
            f"{APPROVAL_QUEUE.logical_id}Source",
            event_source_arn=resources.queue.queue_arn,
            batch_size=APPROVAL_QUEUE.batch_size,
            max_concurrency=APPROVAL_QUEUE.max_concurrency,
            report_batch_item_failures=True,
        )
        iam.Grant.add_to_principal(
            grantee=self.handler.alias,
            actions=list(EVENT_SOURCE_ACTIONS),
            resource_arns=[resources.queue.queue_arn],
        )

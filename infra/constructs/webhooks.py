"""Completion webhooks on AWS: the lambdagraph event bus (with an archive for replay), the rule
routing run-ended events of runs with a ``webhook`` to the deliveries queue (with its DLQ and
an alarm on arrivals there), the signing secret in Secrets Manager, and the sender function
fed by the queue. Definitions shared with the local stack come from ``functions.resources``.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.resources import (
    EVENT_ARCHIVE_RETENTION_DAYS,
    EVENT_BUS_ENV,
    RUN_ENDED_DETAIL_TYPE,
    RUN_EVENTS_SOURCE,
    WEBHOOK_FUNCTION,
    WEBHOOK_QUEUE,
    WEBHOOK_RULE_PATTERN,
)
from infra.constructs.function import ServiceFunction
from infra.constructs.nag import acknowledge
from infra.constructs.worker import EVENT_SOURCE_ACTIONS

PERIOD = Duration.minutes(1)


class Webhooks(Construct):
    """Built in two steps: the resources (their names go into every function's environment),
    then ``add_sender`` with that environment."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.bus = events.EventBus(self, "Bus", description="lambdagraph run-ended events")
        self.archive = self.bus.archive(
            "Archive",
            description="lambdagraph run-ended events, kept for replay",
            event_pattern=events.EventPattern(source=[RUN_EVENTS_SOURCE]),
            retention=Duration.days(EVENT_ARCHIVE_RETENTION_DAYS),
        )
        self.dlq = sqs.Queue(
            self,
            f"{WEBHOOK_QUEUE.logical_id}Dlq",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            WEBHOOK_QUEUE.logical_id,
            visibility_timeout=Duration.seconds(WEBHOOK_QUEUE.visibility_timeout_s),
            retention_period=Duration.seconds(WEBHOOK_QUEUE.retention_s),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=WEBHOOK_QUEUE.max_receive_count
            ),
        )
        self.rule = events.Rule(
            self,
            "DeliveriesRule",
            description="Run-ended events of runs with a webhook -> the webhook deliveries queue",
            event_bus=self.bus,
            event_pattern=events.EventPattern(
                source=[RUN_EVENTS_SOURCE],
                detail_type=[RUN_ENDED_DETAIL_TYPE],
                detail=WEBHOOK_RULE_PATTERN["detail"],
            ),
            targets=[targets.SqsQueue(self.queue, retry_attempts=185)],
        )
        # ``{"webhook_secret": "<32 alphanumerics>"}``: valid base64, read as whsec_<it>
        # (functions/webhooks/signing.py). Rotation: store ``{"secrets": [new, old]}``.
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description="lambdagraph webhook signing secret(s) (Standard Webhooks)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template="{}",
                generate_string_key="webhook_secret",
                password_length=32,
                exclude_punctuation=True,
            ),
        )
        acknowledge(
            self.secret,
            {
                "AwsSolutions-SMG4": (
                    "Receivers hold this secret: rotating it is a coordinated change (both "
                    "secrets active for a while), done by hand as docs/webhooks.md describes."
                ),
            },
        )
        self.dlq_alarm = cw.Alarm(
            self,
            "DlqArrivals",
            alarm_description=(
                "Webhook deliveries failed after their last attempt (parked in the webhook DLQ). "
                "GET /threads/{tid}/runs/{rid}/webhooks shows each attempt; fix the receiver, "
                "then redrive."
            ),
            metric=cw.MathExpression(
                expression="DIFF(FILL(visible, 0))",
                using_metrics={
                    "visible": self.dlq.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", period=PERIOD
                    )
                },
                period=PERIOD,
                label="webhook DLQ arrivals",
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.sender: ServiceFunction | None = None

    def environment(self) -> dict[str, str]:
        """What the functions need to know of webhooks (every function ends runs)."""
        return {
            EVENT_BUS_ENV: self.bus.event_bus_name,
            WEBHOOK_QUEUE.env_var: self.queue.queue_url,
            WEBHOOK_QUEUE.dlq_env_var or "": self.dlq.queue_url,
            "LAMBDAGRAPH_WEBHOOK_SECRET_ARN": self.secret.secret_arn,
        }

    def add_sender(self, *, code: lambda_.Code, environment: Mapping[str, str]) -> ServiceFunction:
        sender = ServiceFunction(self, WEBHOOK_FUNCTION, code=code, environment=environment)
        sender.alias.add_event_source_mapping(
            f"{WEBHOOK_QUEUE.logical_id}Source",
            event_source_arn=self.queue.queue_arn,
            batch_size=WEBHOOK_QUEUE.batch_size,
            max_concurrency=WEBHOOK_QUEUE.max_concurrency,
            report_batch_item_failures=True,
        )
        iam.Grant.add_to_principal(
            grantee=sender.alias,
            actions=list(EVENT_SOURCE_ACTIONS),
            resource_arns=[self.queue.queue_arn],
        )
        self.sender = sender
        return sender

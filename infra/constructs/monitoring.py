"""Alarms and the CloudWatch dashboard.

Alarms: any message in any DLQ, errors of each function (the step worker's among them), p95
step duration, and the age of the oldest message per priority queue. The error and DLQ alarms
also roll back CodeDeploy canaries (``infra.constructs.deployment``). Metric names come from
``functions.resources``, which the engine's Powertools Metrics use too.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from functions.resources import (
    ALARM_OLDEST_MESSAGE_AGE_S,
    ALARM_STEP_DURATION_P95_MS,
    METRIC_QUEUE_WAIT,
    METRIC_STEP_DURATION,
    METRIC_STEPS,
    METRICS_NAMESPACE,
    RUN_FINAL_STATUSES,
    SERVICE_NAME,
    Priority,
    run_status_metric,
)
from infra.constructs.function import ServiceFunction
from infra.constructs.nag import acknowledge
from infra.constructs.queues import StepQueues

PERIOD = Duration.minutes(1)


def engine_metric(name: str, statistic: str, label: str | None = None) -> cw.Metric:
    """A Powertools metric of the engine (dimension ``service``, as Powertools adds it)."""
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SERVICE_NAME},
        statistic=statistic,
        period=PERIOD,
        label=label,
    )


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: StepQueues,
        functions: list[ServiceFunction],
        worker: ServiceFunction,
        alarm_email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dlq_alarms: dict[Priority, cw.Alarm] = {
            priority: cw.Alarm(
                self,
                f"{queues.specs[priority].logical_id}DlqNotEmpty",
                alarm_description=f"A {priority}-priority step message failed maxReceiveCount times",
                metric=dlq.metric_approximate_number_of_messages_visible(
                    statistic="Maximum", period=PERIOD
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            for priority, dlq in queues.dlqs.items()
        }
        self.error_alarms: dict[str, cw.Alarm] = {
            fn.spec.logical_id: cw.Alarm(
                self,
                f"{fn.spec.logical_id}Errors",
                alarm_description=f"The {fn.spec.logical_id} function (alias live) raised",
                metric=fn.alias.metric_errors(statistic="Sum", period=PERIOD),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            for fn in functions
        }
        self.step_duration_alarm = cw.Alarm(
            self,
            "StepDurationP95",
            alarm_description="p95 superstep duration is high (slow model or slow storage)",
            metric=engine_metric(METRIC_STEP_DURATION, "p95"),
            threshold=ALARM_STEP_DURATION_P95_MS,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.oldest_message_alarms: dict[Priority, cw.Alarm] = {
            priority: cw.Alarm(
                self,
                f"{queues.specs[priority].logical_id}OldestMessage",
                alarm_description=f"{priority}-priority steps wait too long for a worker",
                metric=queue.metric_approximate_age_of_oldest_message(
                    statistic="Maximum", period=PERIOD
                ),
                threshold=ALARM_OLDEST_MESSAGE_AGE_S[priority],
                evaluation_periods=3,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            for priority, queue in queues.queues.items()
        }
        self.topic: sns.Topic | None = None
        if alarm_email:
            self._notify(alarm_email)
        self.dashboard = self._dashboard(queues, worker)

    @property
    def all_alarms(self) -> list[cw.Alarm]:
        return [
            *self.dlq_alarms.values(),
            *self.error_alarms.values(),
            self.step_duration_alarm,
            *self.oldest_message_alarms.values(),
        ]

    def _notify(self, email: str) -> None:
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name="lambdagraph alarms",
            enforce_ssl=True,
        )
        acknowledge(
            self.topic,
            {
                "AwsSolutions-SNS2": (
                    "CloudWatch cannot publish to a topic encrypted with the AWS-managed aws/sns "
                    "key, and a customer key costs a monthly fee; alarm notifications carry only "
                    "alarm names and states."
                ),
            },
        )
        self.topic.add_subscription(subscriptions.EmailSubscription(email))
        action = cw_actions.SnsAction(self.topic)
        for alarm in self.all_alarms:
            alarm.add_alarm_action(action)

    def _dashboard(self, queues: StepQueues, worker: ServiceFunction) -> cw.Dashboard:
        dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Runs by final status",
                left=[
                    engine_metric(run_status_metric(status), "Sum", label=status)
                    for status in RUN_FINAL_STATUSES
                ],
                width=12,
            ),
            cw.GraphWidget(
                title="Supersteps",
                left=[engine_metric(METRIC_STEPS, "Sum", label="steps")],
                right=[worker.alias.metric_errors(statistic="Sum", period=PERIOD, label="errors")],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth per priority",
                left=[
                    queue.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", period=PERIOD, label=priority
                    )
                    for priority, queue in queues.queues.items()
                ],
                right=[
                    dlq.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", period=PERIOD, label=f"{priority} DLQ"
                    )
                    for priority, dlq in queues.dlqs.items()
                ],
                width=12,
            ),
            cw.GraphWidget(
                title="Step duration and queue wait (ms)",
                left=[
                    engine_metric(METRIC_STEP_DURATION, "p50", label="step p50"),
                    engine_metric(METRIC_STEP_DURATION, "p95", label="step p95"),
                ],
                right=[engine_metric(METRIC_QUEUE_WAIT, "p95", label="queue wait p95")],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=self.all_alarms, width=24)
        )
        return dashboard

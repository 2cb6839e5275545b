"""Alarms and the CloudWatch dashboard.

Standing alarms (they notify the alarm e-mail):
- arrivals in each DLQ (an increase of the visible count, not its presence: messages the
  worker gave up on stay there on purpose until someone redrives or purges them, and an
  alarm on presence would stay red, and block every release, until then);
- a backlog per priority queue: messages waiting *and* the oldest one old, for 3 minutes
  (the age alone counts in-flight messages, which a long healthy step keeps old);
- errors and throttles of each function; p95 step duration; API Gateway 5xx and a p99
  latency near the 29 s wall.

Canary alarms (``canary_alarms``, read by CodeDeploy while 10% of the traffic goes to a new
version, ``infra.constructs.deployment``) watch what a bad release of the shared code asset
produces within its 5 minutes, for the *new version* wherever the metric says which one:
- every function: Lambda ``Errors`` of the new version (``ExecutedVersion``): crashes, timeouts;
- API: ``ApiServerErrors`` of the new version (answered 5xx, which Lambda counts as success);
- step worker: ``StepFailures`` (failed step attempts are reported as batch item failures,
  which Lambda counts as success, and reach a DLQ only after 5 x 1,800 s).

Metric names come from ``functions.resources``, which the engine's Powertools Metrics use too.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws, Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from functions.resources import (
    ALARM_API_LATENCY_P99_MS,
    ALARM_OLDEST_MESSAGE_AGE_S,
    ALARM_STEP_DURATION_P95_MS,
    METRIC_API_SERVER_ERRORS,
    METRIC_QUEUE_WAIT,
    METRIC_STEP_DURATION,
    METRIC_STEP_FAILURES,
    METRIC_STEPS,
    METRIC_VERSION_DIMENSION,
    METRICS_NAMESPACE,
    RUN_FINAL_STATUSES,
    SERVICE_NAME,
    Priority,
    run_status_metric,
)
from infra.constructs.function import ALIAS_NAME, ServiceFunction
from infra.constructs.nag import acknowledge
from infra.constructs.queues import StepQueues

PERIOD = Duration.minutes(1)
# Minutes a backlog must last before it alarms.
BACKLOG_MINUTES = 3


def engine_metric(
    name: str, statistic: str, label: str | None = None, version: str | None = None
) -> cw.Metric:
    """A Powertools metric of the engine (dimension ``service``, as Powertools adds it; and
    the function version for the counts emitted per version)."""
    dimensions = {"service": SERVICE_NAME}
    if version is not None:
        dimensions[METRIC_VERSION_DIMENSION] = version
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map=dimensions,
        statistic=statistic,
        period=PERIOD,
        label=label,
    )


def version_errors(fn: ServiceFunction) -> cw.Metric:
    """Lambda ``Errors`` of the function's current version, invoked through the alias."""
    return cw.Metric(
        namespace="AWS/Lambda",
        metric_name="Errors",
        dimensions_map={
            "FunctionName": fn.function.function_name,
            "Resource": f"{fn.function.function_name}:{ALIAS_NAME}",
            "ExecutedVersion": fn.function.current_version.version,
        },
        statistic="Sum",
        period=PERIOD,
    )


def _count_alarm(
    scope: Construct, construct_id: str, description: str, metric: cw.IMetric
) -> cw.Alarm:
    return cw.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=metric,
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
    )


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: StepQueues,
        functions: Sequence[ServiceFunction],
        api: ServiceFunction,
        worker: ServiceFunction,
        rest_api: apigw.RestApi,
        alarm_email: str | None = None,
        dlq_alarms: Sequence[cw.Alarm] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        # Other constructs' DLQ alarms (webhooks): notified like the step DLQs'.
        self.other_dlq_alarms = list(dlq_alarms)
        self.dlq_alarms: dict[Priority, cw.Alarm] = {
            priority: cw.Alarm(
                self,
                f"{queues.specs[priority].logical_id}DlqArrivals",
                alarm_description=(
                    f"Step messages arrived in the {priority}-priority DLQ (a step was given up "
                    "on). Look at the run, then redrive or purge; the alarm clears by itself "
                    "when no more arrive."
                ),
                metric=cw.MathExpression(
                    expression="DIFF(FILL(visible, 0))",
                    using_metrics={
                        "visible": dlq.metric_approximate_number_of_messages_visible(
                            statistic="Maximum", period=PERIOD
                        )
                    },
                    period=PERIOD,
                    label=f"{priority} DLQ arrivals",
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            for priority, dlq in queues.dlqs.items()
        }
        self.error_alarms: dict[str, cw.Alarm] = {
            fn.spec.logical_id: _count_alarm(
                self,
                f"{fn.spec.logical_id}Errors",
                f"The {fn.spec.logical_id} function (alias live) raised or timed out",
                fn.alias.metric_errors(statistic="Sum", period=PERIOD),
            )
            for fn in functions
        }
        self.throttle_alarms: dict[str, cw.Alarm] = {
            fn.spec.logical_id: _count_alarm(
                self,
                f"{fn.spec.logical_id}Throttles",
                f"Invocations of {fn.spec.logical_id} were throttled (concurrency exhausted: "
                "see the account quota in docs/deploy.md)",
                fn.alias.metric_throttles(statistic="Sum", period=PERIOD),
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
        self.backlog_alarms: dict[Priority, cw.Alarm] = {
            priority: self._backlog_alarm(queues, priority) for priority in queues.queues
        }
        self.api_5xx_alarm = cw.Alarm(
            self,
            "Api5xx",
            alarm_description="API Gateway answered 5xx (function errors, 502/504 at the wall)",
            metric=rest_api.metric_server_error(statistic="Sum", period=PERIOD),
            threshold=1,
            evaluation_periods=5,
            datapoints_to_alarm=2,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.api_latency_alarm = cw.Alarm(
            self,
            "ApiLatencyP99",
            alarm_description=(
                "p99 API latency is beyond any runs/wait (the join timeout plus its work): "
                "requests near API Gateway's 29 s wall"
            ),
            metric=rest_api.metric_latency(statistic="p99", period=PERIOD),
            threshold=ALARM_API_LATENCY_P99_MS,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.canary_alarms = self._canary_alarms(functions, api, worker)
        self.topic: sns.Topic | None = None
        if alarm_email:
            self._notify(alarm_email)
        self.dashboard = self._dashboard(queues, functions, worker, rest_api)

    def _backlog_alarm(self, queues: StepQueues, priority: Priority) -> cw.Alarm:
        queue = queues.queues[priority]
        age = ALARM_OLDEST_MESSAGE_AGE_S[priority]
        return cw.Alarm(
            self,
            f"{queues.specs[priority].logical_id}Backlog",
            alarm_description=(
                f"{priority}-priority steps are waiting for a worker: messages visible and the "
                f"oldest older than {age} s for {BACKLOG_MINUTES} minutes"
            ),
            metric=cw.MathExpression(
                expression=f"IF(visible >= 1 AND age > {age}, 1, 0)",
                using_metrics={
                    # The fewest waiting in the minute: in-flight messages are not visible.
                    "visible": queue.metric_approximate_number_of_messages_visible(
                        statistic="Minimum", period=PERIOD
                    ),
                    "age": queue.metric_approximate_age_of_oldest_message(
                        statistic="Maximum", period=PERIOD
                    ),
                },
                period=PERIOD,
                label=f"{priority} backlog",
            ),
            threshold=1,
            evaluation_periods=BACKLOG_MINUTES,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

    def _canary_alarms(
        self, functions: Sequence[ServiceFunction], api: ServiceFunction, worker: ServiceFunction
    ) -> dict[str, list[cw.Alarm]]:
        alarms: dict[str, list[cw.Alarm]] = {}
        for fn in functions:
            alarms[fn.spec.logical_id] = [
                _count_alarm(
                    self,
                    f"{fn.spec.logical_id}NewVersionErrors",
                    f"The {fn.spec.logical_id} version being released raised or timed out "
                    "(rolls the canary back)",
                    version_errors(fn),
                )
            ]
        alarms[api.spec.logical_id].append(
            _count_alarm(
                self,
                "ApiNewVersionServerErrors",
                "The API version being released answered 5xx (rolls the canary back)",
                engine_metric(
                    METRIC_API_SERVER_ERRORS, "Sum", version=api.function.current_version.version
                ),
            )
        )
        alarms[worker.spec.logical_id].append(
            _count_alarm(
                self,
                "StepFailuresDuringRelease",
                "Step attempts failed (the worker reports them as batch item failures, which "
                "Lambda counts as success; rolls a worker canary back)",
                engine_metric(
                    METRIC_STEP_FAILURES, "Sum", version=worker.function.current_version.version
                ),
            )
        )
        return alarms

    @property
    def all_alarms(self) -> list[cw.Alarm]:
        return [
            *self.dlq_alarms.values(),
            *self.other_dlq_alarms,
            *self.error_alarms.values(),
            *self.throttle_alarms.values(),
            self.step_duration_alarm,
            *self.backlog_alarms.values(),
            self.api_5xx_alarm,
            self.api_latency_alarm,
            *(alarm for alarms in self.canary_alarms.values() for alarm in alarms),
        ]

    def _notify(self, email: str) -> None:
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name="lambdagraph alarms",
            enforce_ssl=True,
        )
        # enforce_ssl makes CDK write a topic policy holding only its Deny statement, which
        # replaces the default policy: CloudWatch (a service principal) may then not publish.
        # Allowed here, only for this account's alarms (no confused deputy).
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                effect=iam.Effect.ALLOW,
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {
                        "aws:SourceArn": (
                            f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:*"
                        )
                    },
                },
            )
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
            if (
                alarm in self.dlq_alarms.values()
                or alarm in self.other_dlq_alarms
                or alarm in self.backlog_alarms.values()
            ):
                continue
            # Canary and error alarms clear quickly: say when they did.
            alarm.add_ok_action(action)

    def _dashboard(
        self,
        queues: StepQueues,
        functions: Sequence[ServiceFunction],
        worker: ServiceFunction,
        rest_api: apigw.RestApi,
    ) -> cw.Dashboard:
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
                title="Supersteps and failed step attempts",
                left=[engine_metric(METRIC_STEPS, "Sum", label="steps")],
                right=[
                    engine_metric(METRIC_STEP_FAILURES, "Sum", label="step failures"),
                    worker.alias.metric_errors(statistic="Sum", period=PERIOD, label="errors"),
                ],
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
            cw.GraphWidget(
                title="API requests and errors",
                left=[
                    rest_api.metric_count(statistic="Sum", period=PERIOD, label="requests"),
                    rest_api.metric_client_error(statistic="Sum", period=PERIOD, label="4xx"),
                    rest_api.metric_server_error(statistic="Sum", period=PERIOD, label="5xx"),
                ],
                right=[engine_metric(METRIC_API_SERVER_ERRORS, "Sum", label="answered 5xx")],
                width=8,
            ),
            cw.GraphWidget(
                title="API latency (ms)",
                left=[
                    rest_api.metric_latency(statistic="p50", period=PERIOD, label="p50"),
                    rest_api.metric_latency(statistic="p99", period=PERIOD, label="p99"),
                ],
                left_annotations=[
                    cw.HorizontalAnnotation(value=ALARM_API_LATENCY_P99_MS, label="alarm")
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Function errors and throttles",
                left=[
                    fn.alias.metric_errors(
                        statistic="Sum", period=PERIOD, label=f"{fn.spec.logical_id} errors"
                    )
                    for fn in functions
                ],
                right=[
                    fn.alias.metric_throttles(
                        statistic="Sum", period=PERIOD, label=f"{fn.spec.logical_id} throttles"
                    )
                    for fn in functions
                ],
                width=8,
            ),
        )
        dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=self.all_alarms, width=24, height=8)
        )
        return dashboard

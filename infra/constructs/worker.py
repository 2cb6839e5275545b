"""The step worker: one superstep per SQS message, fed by the three priority queues.

Each queue is an event source on the ``live`` alias with partial batch failures and its own
``MaximumConcurrency`` (from ``STEP_QUEUES``), so a ``low`` backlog can never take the
concurrency ``high`` work needs. The function's reserved concurrency covers all of them at
once, so nothing else in the account (API waits above all) can take it.

Lambda's poller reads the queues with the function's role: it is granted exactly what the
Lambda documentation lists for an SQS event source (receive, delete, read attributes); CDK's
``SqsEventSource`` would add ``ChangeMessageVisibility`` and ``GetQueueUrl``, which nothing
calls (tests/infra/test_iam_coverage.py holds every grant to a call).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from functions.resources import STEP_TIMINGS, STEP_WORKER_FUNCTION, StepTimings
from infra.constructs.function import ServiceFunction
from infra.constructs.queues import StepQueues

# What Lambda's SQS poller calls with the function's role.
EVENT_SOURCE_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")


class StepWorker(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
        environment: Mapping[str, str],
        queues: StepQueues,
    ) -> None:
        super().__init__(scope, construct_id)
        self.handler = ServiceFunction(
            self, STEP_WORKER_FUNCTION, code=code, environment=environment
        )
        polled = [spec.max_concurrency or 0 for spec in queues.specs.values()]
        reserved = STEP_WORKER_FUNCTION.reserved_concurrency
        if reserved is None or reserved < sum(polled):
            raise ValueError(
                f"the step worker reserves {reserved} executions but its queues may use "
                f"{sum(polled)} at once (MaximumConcurrency): SQS batches would be throttled"
            )
        for priority, queue in queues.queues.items():
            spec = queues.specs[priority]
            if spec.max_concurrency is None:
                continue
            # visibility > lease > function timeout, or recovery could run a step twice.
            StepTimings(
                function_timeout_s=STEP_WORKER_FUNCTION.timeout_s,
                lease_s=float(environment.get("LAMBDAGRAPH_LEASE_S", STEP_TIMINGS.lease_s)),
                visibility_timeout_s=spec.visibility_timeout_s,
                housekeeping_every_s=STEP_TIMINGS.housekeeping_every_s,
            ).check()
            self.handler.alias.add_event_source_mapping(
                f"{spec.logical_id}Source",
                event_source_arn=queue.queue_arn,
                batch_size=spec.batch_size,
                max_concurrency=spec.max_concurrency,
                report_batch_item_failures=True,
            )
            iam.Grant.add_to_principal(
                grantee=self.handler.alias,
                actions=list(EVENT_SOURCE_ACTIONS),
                resource_arns=[queue.queue_arn],
            )

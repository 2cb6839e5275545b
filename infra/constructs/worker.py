"""The step worker: one superstep per SQS message, fed by the three priority queues.

Each queue is an event source on the ``live`` alias with partial batch failures and its own
``MaximumConcurrency`` (from ``STEP_QUEUES``), so a ``low`` backlog can never take the
concurrency ``high`` work needs.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from functions.resources import STEP_TIMINGS, STEP_WORKER_FUNCTION, StepTimings
from infra.constructs.function import ServiceFunction
from infra.constructs.queues import StepQueues


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
            self.handler.alias.add_event_source(
                sources.SqsEventSource(
                    queue,
                    batch_size=spec.batch_size,
                    max_concurrency=spec.max_concurrency,
                    report_batch_item_failures=True,
                )
            )

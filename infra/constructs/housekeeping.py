"""Housekeeping: a scheduled function that re-queues runs whose lease expired with no message."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from functions.resources import HOUSEKEEPING_FUNCTION, HOUSEKEEPING_RATE_MINUTES
from infra.constructs.function import ServiceFunction


class Housekeeping(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
        environment: Mapping[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.handler = ServiceFunction(
            self, HOUSEKEEPING_FUNCTION, code=code, environment=environment
        )
        self.schedule = events.Rule(
            self,
            "Schedule",
            description="lambdagraph housekeeping: re-queue runs whose lease expired",
            schedule=events.Schedule.rate(Duration.minutes(HOUSEKEEPING_RATE_MINUTES)),
            targets=[targets.LambdaFunction(self.handler.alias, retry_attempts=0)],
        )

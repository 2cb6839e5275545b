"""The three priority step queues, each with its dead-letter queue, from ``STEP_QUEUES``."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.resources import STEP_QUEUES, Priority, QueueSpec


class StepQueues(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.specs: dict[Priority, QueueSpec] = dict(STEP_QUEUES)
        self.queues: dict[Priority, sqs.Queue] = {}
        self.dlqs: dict[Priority, sqs.Queue] = {}
        for priority, spec in STEP_QUEUES.items():
            dlq = sqs.Queue(
                self,
                f"{spec.logical_id}Dlq",
                retention_period=Duration.days(14),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
            )
            self.dlqs[priority] = dlq
            self.queues[priority] = sqs.Queue(
                self,
                spec.logical_id,
                visibility_timeout=Duration.seconds(spec.visibility_timeout_s),
                retention_period=Duration.seconds(spec.retention_s),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                dead_letter_queue=sqs.DeadLetterQueue(
                    queue=dlq, max_receive_count=spec.max_receive_count
                ),
            )

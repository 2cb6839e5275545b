"""The lambdagraph stack: one construct per concern, wired by grants (least privilege).

Later capabilities (approvals, webhooks, model providers) add their own constructs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, CfnResource, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from functions.resources import (
    CHECKPOINT_TABLE,
    METRICS_NAMESPACE,
    PAYLOAD_BUCKET,
    RUNTIME_TABLE,
    SERVICE_NAME,
    STEP_QUEUES,
    STEP_TIMINGS,
)
from infra.constructs.api import Api
from infra.constructs.deployment import CanaryDeployments
from infra.constructs.housekeeping import Housekeeping
from infra.constructs.monitoring import Monitoring
from infra.constructs.nag import acknowledge
from infra.constructs.queues import StepQueues
from infra.constructs.storage import Storage
from infra.constructs.worker import StepWorker


@dataclass(frozen=True)
class StackConfig:
    """Deployment parameters (CDK context, see docs/deploy.md)."""

    asset_dir: Path
    # Retention of checkpoints and runtime records (0 = keep forever); the bucket matches it.
    ttl_days: int = 30
    log_level: str = "INFO"
    alarm_email: str | None = None
    # Keep tables and the payload bucket when the stack is deleted.
    retain_data: bool = True


class LambdaGraphStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY
        self.storage = Storage(self, "Storage", ttl_days=config.ttl_days, removal=removal)
        self.queues = StepQueues(self, "Queues")
        environment = self._environment(config)
        # One asset for every function: only the handler string differs.
        code = lambda_.Code.from_asset(str(config.asset_dir))

        self.api = Api(self, "Api", code=code, environment=environment)
        self.worker = StepWorker(
            self, "Worker", code=code, environment=environment, queues=self.queues
        )
        self.housekeeping = Housekeeping(self, "Housekeeping", code=code, environment=environment)
        self._grant()

        functions = [self.api.handler, self.worker.handler, self.housekeeping.handler]
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            queues=self.queues,
            functions=functions,
            worker=self.worker.handler,
            alarm_email=config.alarm_email,
        )
        self.deployments = CanaryDeployments(self, "Deployments")
        for fn in functions:
            alarms = [self.monitoring.error_alarms[fn.spec.logical_id]]
            if fn is self.worker.handler:
                # Messages in a DLQ after a release mean the new worker fails steps.
                alarms.extend(self.monitoring.dlq_alarms.values())
            self.deployments.add(fn, alarms)
        self._outputs()

    def _environment(self, config: StackConfig) -> dict[str, str]:
        """What every function's ``functions.settings.Settings`` reads (plus Powertools)."""
        env = {
            CHECKPOINT_TABLE.env_var: self.storage.checkpoint_table.table_name,
            RUNTIME_TABLE.env_var: self.storage.runtime_table.table_name,
            PAYLOAD_BUCKET.env_var: self.storage.payload_bucket.bucket_name,
            "LAMBDAGRAPH_TTL_DAYS": str(config.ttl_days),
            # On AWS, API keys live hashed in the runtime table (docs/deploy.md).
            "LAMBDAGRAPH_API_KEYS_IN_TABLE": "true",
            # The worker marks a run `error` at the receive count where SQS gives up.
            "LAMBDAGRAPH_MAX_RECEIVE_COUNT": str(
                min(spec.max_receive_count for spec in STEP_QUEUES.values())
            ),
            # Attempts at one step are counted on the run; the last one allowed ends it
            # `error` before SQS would park its message in the DLQ.
            "LAMBDAGRAPH_MAX_STEP_ATTEMPTS": str(
                min(spec.max_receive_count for spec in STEP_QUEUES.values())
            ),
            # The timings recovery relies on (checked in the worker construct).
            "LAMBDAGRAPH_LEASE_S": str(STEP_TIMINGS.lease_s),
            "LAMBDAGRAPH_VISIBILITY_TIMEOUT_S": str(STEP_TIMINGS.visibility_timeout_s),
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": config.log_level,
        }
        for priority, spec in STEP_QUEUES.items():
            env[spec.env_var] = self.queues.queues[priority].queue_url
            if spec.dlq_env_var:
                env[spec.dlq_env_var] = self.queues.dlqs[priority].queue_url
        return env

    def _grant(self) -> None:
        storage, queues = self.storage, self.queues
        api, worker, housekeeping = self.api.handler, self.worker.handler, self.housekeeping.handler
        # API: threads and runs (runtime table), state/history/update_state/delete (checkpoints
        # and their payloads), enqueueing the first step of a run.
        # Worker: claims and run records, checkpoints, the next step message on any priority.
        for fn in (api, worker):
            storage.runtime_table.grant_read_write_data(fn.alias)
            storage.checkpoint_table.grant_read_write_data(fn.alias)
            # Only the object calls the checkpointer makes (CDK's bucket grants add wildcards).
            iam.Grant.add_to_principal(
                grantee=fn.alias,
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                resource_arns=[storage.payload_bucket.arn_for_objects("*")],
            )
            for queue in queues.queues.values():
                queue.grant_send_messages(fn.alias)
            acknowledge(
                fn,
                {
                    self._index_finding(storage.runtime_table.node.default_child): _INDEX_REASON,
                    self._objects_finding(storage.payload_bucket.node.default_child): (
                        "Checkpoint payload objects are keyed by thread and checkpoint id, "
                        "unknown in advance: the grant covers the objects of this one bucket."
                    ),
                },
            )
        # Housekeeping (functions/housekeeping.py): finds expired leases through the runtime
        # table's GSI and re-queues the step. The worker itself marks a run `error` at the last
        # receive, so nobody needs to read the DLQs.
        storage.runtime_table.grant_read_write_data(housekeeping.alias)
        for queue in queues.queues.values():
            queue.grant_send_messages(housekeeping.alias)
        acknowledge(
            housekeeping,
            {self._index_finding(storage.runtime_table.node.default_child): _INDEX_REASON},
        )

    def _index_finding(self, table: object) -> str:
        return f"AwsSolutions-IAM5[Resource::<{self._logical_id(table)}.Arn>/index/*]"

    def _objects_finding(self, bucket: object) -> str:
        return f"AwsSolutions-IAM5[Resource::<{self._logical_id(bucket)}.Arn>/*]"

    def _logical_id(self, element: object) -> str:
        if not isinstance(element, CfnResource):
            raise TypeError(f"expected a CloudFormation resource, got {element!r}")
        return str(self.resolve(element.logical_id))

    def _outputs(self) -> None:
        CfnOutput(
            self, "ApiUrl", value=self.api.url, description="langgraph-sdk get_client(url=...)"
        )
        CfnOutput(self, "CheckpointTableName", value=self.storage.checkpoint_table.table_name)
        CfnOutput(self, "RuntimeTableName", value=self.storage.runtime_table.table_name)
        CfnOutput(self, "PayloadBucketName", value=self.storage.payload_bucket.bucket_name)
        for priority, spec in STEP_QUEUES.items():
            CfnOutput(self, f"{spec.logical_id}Url", value=self.queues.queues[priority].queue_url)
            CfnOutput(self, f"{spec.logical_id}DlqUrl", value=self.queues.dlqs[priority].queue_url)
        CfnOutput(self, "DashboardName", value=self.monitoring.dashboard.dashboard_name)


_INDEX_REASON = (
    "Queries on the runtime table's GSI (gsi1) go through its index ARN, which IAM "
    "matches as <table>/index/*; the grant is for this one table."
)

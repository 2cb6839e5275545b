"""The lambdagraph stack: one construct per concern, wired by grants (least privilege).

Later capabilities (approvals, webhooks, model providers) add their own constructs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, CfnResource, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from functions.resources import (
    API_JOIN_POLL_S,
    API_JOIN_TIMEOUT_S,
    CACHE_TABLE,
    CHECKPOINT_TABLE,
    MEMORY_TABLE,
    METRICS_NAMESPACE,
    PAYLOAD_BUCKET,
    RUNTIME_TABLE,
    SERVICE_NAME,
    STEP_QUEUES,
    STEP_TIMINGS,
)
from infra.constructs.api import Api
from infra.constructs.approvals import ApprovalNotifier, ApprovalResources
from infra.constructs.deployment import CanaryDeployments
from infra.constructs.housekeeping import Housekeeping
from infra.constructs.models import ModelAccess, named_specs
from infra.constructs.monitoring import Monitoring
from infra.constructs.nag import acknowledge
from infra.constructs.queues import StepQueues
from infra.constructs.storage import Storage
from infra.constructs.streaming import StreamRoutes
from infra.constructs.webhooks import Webhooks
from infra.constructs.worker import StepWorker
from infra.permissions import GRANTS, Target


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
    # Origins whose pages may call the API (CORS); ("*",) for any, () for none.
    cors_origins: tuple[str, ...] = ()
    # Human approval: the SES sender (an email identity, verified after the first deploy),
    # reviewers when a request names none, and the links' base URL (default: the API's URL).
    approval_sender: str = "approvals@example.com"
    reviewers: str = ""
    public_base_url: str = ""
    # Deployment-wide run budgets (0 = none) and model prices added to the built-in table
    # (JSON, USD per million tokens): docs/models.md.
    budget_max_steps: int = 0
    budget_max_tokens: int = 0
    budget_max_cost_usd: float = 0.0
    model_prices: str = ""
    # Shared rate limits / breaker per model (JSON, functions/models/limits.py).
    model_limits: str = ""
    # The deployment's model, models per node (JSON) and the models runs may pick.
    chat_model: str = ""
    models: str = ""
    run_models: str = ""

    def __post_init__(self) -> None:
        # A malformed setting fails the synth, not a run.
        from functions.models.factory import parse_spec
        from functions.models.prices import parse_prices

        if min(self.budget_max_steps, self.budget_max_tokens, self.budget_max_cost_usd) < 0:
            raise ValueError("budgets must be >= 0 (0 = no limit)")
        parse_prices(self.model_prices)
        if self.chat_model:
            parse_spec(self.chat_model)
        self.model_specs()

    def model_specs(self) -> set[str]:
        """Every ``provider:model`` this deployment may make (what model access covers)."""
        from functions.models.limits import parse_limits
        from functions.models.routing import parse_routes, parse_run_models

        fallbacks = [limit.fallback for limit in parse_limits(self.model_limits).values()]
        return named_specs(
            self.chat_model,
            parse_routes(self.models),
            parse_run_models(self.run_models),
            [f for f in fallbacks if f],
        )


class LambdaGraphStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY
        self.storage = Storage(self, "Storage", ttl_days=config.ttl_days, removal=removal)
        self.queues = StepQueues(self, "Queues")
        self.approvals = ApprovalResources(self, "Approvals", sender=config.approval_sender)
        self.webhooks = Webhooks(self, "Webhooks")
        self.models = ModelAccess(self, "Models", specs=config.model_specs())
        environment = self._environment(config)
        # One asset for every function: only the handler string differs.
        code = lambda_.Code.from_asset(str(config.asset_dir))

        self.api = Api(
            self, "Api", code=code, environment=environment, cors_origins=config.cors_origins
        )
        # The three stream routes: their own function (Lambda Web Adapter, response streaming).
        self.streams = StreamRoutes(
            self, "Streams", code=code, environment=environment, rest_api=self.api.rest_api
        )
        self.worker = StepWorker(
            self, "Worker", code=code, environment=environment, queues=self.queues
        )
        self.housekeeping = Housekeeping(self, "Housekeeping", code=code, environment=environment)
        self.notifier = ApprovalNotifier(
            self,
            "ApprovalNotifier",
            code=code,
            environment={
                **environment,
                # Links point at the API (the notifier is not behind it: no cycle).
                "LAMBDAGRAPH_PUBLIC_BASE_URL": config.public_base_url or self.api.url,
                "LAMBDAGRAPH_REVIEWERS": config.reviewers,
            },
            resources=self.approvals,
        )
        self.webhook_sender = self.webhooks.add_sender(code=code, environment=environment)
        self._grant()
        # Model access (Bedrock models, the OpenAI key) for the models named, worker only.
        self.models.grant(self.worker.handler)

        functions = [
            self.api.handler,
            self.streams.handler,
            self.worker.handler,
            self.housekeeping.handler,
            self.notifier.handler,
            self.webhook_sender,
        ]
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            queues=self.queues,
            functions=functions,
            api=self.api.handler,
            worker=self.worker.handler,
            rest_api=self.api.rest_api,
            alarm_email=config.alarm_email,
            dlq_alarms=[self.webhooks.dlq_alarm],
        )
        if self.monitoring.topic is not None:
            self.approvals.dlq_alarm.add_alarm_action(cw_actions.SnsAction(self.monitoring.topic))
        self.deployments = CanaryDeployments(self, "Deployments")
        for fn in functions:
            # What a bad release produces within the canary's minutes (monitoring.py); the
            # DLQ alarms are not among them: a message reaches a DLQ hours later.
            self.deployments.add(fn, self.monitoring.canary_alarms[fn.spec.logical_id])
        self._outputs()

    def _environment(self, config: StackConfig) -> dict[str, str]:
        """What every function's ``functions.settings.Settings`` reads (plus Powertools)."""
        env = {
            CHECKPOINT_TABLE.env_var: self.storage.checkpoint_table.table_name,
            RUNTIME_TABLE.env_var: self.storage.runtime_table.table_name,
            PAYLOAD_BUCKET.env_var: self.storage.payload_bucket.bucket_name,
            CACHE_TABLE.env_var: self.storage.cache_table.table_name,
            MEMORY_TABLE.env_var: self.storage.memory_table.table_name,
            "LAMBDAGRAPH_TTL_DAYS": str(config.ttl_days),
            # What API Gateway's 29 s wall leaves a runs/wait (functions/resources.py).
            "LAMBDAGRAPH_JOIN_TIMEOUT_S": f"{API_JOIN_TIMEOUT_S:g}",
            "LAMBDAGRAPH_JOIN_POLL_S": f"{API_JOIN_POLL_S:g}",
            "LAMBDAGRAPH_CORS_ORIGINS": ",".join(config.cors_origins),
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
            **self.approvals.environment(),
            "LAMBDAGRAPH_REVIEWERS": config.reviewers,
            "LAMBDAGRAPH_BUDGET_MAX_STEPS": str(config.budget_max_steps),
            "LAMBDAGRAPH_BUDGET_MAX_TOKENS": str(config.budget_max_tokens),
            "LAMBDAGRAPH_BUDGET_MAX_COST_USD": f"{config.budget_max_cost_usd:g}",
            "LAMBDAGRAPH_MODEL_PRICES": config.model_prices,
            "LAMBDAGRAPH_MODEL_LIMITS": config.model_limits,
            "LAMBDAGRAPH_CHAT_MODEL": config.chat_model,
            "LAMBDAGRAPH_MODELS": config.models,
            "LAMBDAGRAPH_RUN_MODELS": config.run_models,
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": config.log_level,
        }
        for priority, spec in STEP_QUEUES.items():
            env[spec.env_var] = self.queues.queues[priority].queue_url
            if spec.dlq_env_var:
                env[spec.dlq_env_var] = self.queues.dlqs[priority].queue_url
        env.update(self.webhooks.environment())
        env.update(self.models.environment())
        return env

    def _grant(self) -> None:
        """Each function's role gets what ``infra.permissions.GRANTS`` lists, nothing more."""
        storage = self.storage
        runtime_arn = storage.runtime_table.table_arn
        arns: dict[Target, list[str]] = {
            Target.RUNTIME_TABLE: [runtime_arn],
            Target.RUNTIME_INDEXES: [
                f"{runtime_arn}/index/{index.name}" for index in RUNTIME_TABLE.global_indexes
            ],
            Target.CHECKPOINT_TABLE: [storage.checkpoint_table.table_arn],
            Target.CACHE_TABLE: [storage.cache_table.table_arn],
            Target.MEMORY_TABLE: [storage.memory_table.table_arn],
            Target.PAYLOAD_BUCKET: [storage.payload_bucket.bucket_arn],
            Target.PAYLOAD_OBJECTS: [storage.payload_bucket.arn_for_objects("*")],
            Target.STEP_QUEUES: [queue.queue_arn for queue in self.queues.queues.values()],
            Target.APPROVAL_STATE_MACHINE: [self.approvals.state_machine.state_machine_arn],
            Target.APPROVAL_SIGNING_SECRET: [self.approvals.signing_key.secret_arn],
            Target.APPROVAL_SENDER: [
                self.format_arn(
                    service="ses",
                    resource="identity",
                    resource_name=self.approvals.sender.email_identity_name,
                )
            ],
            Target.EVENT_BUS: [self.webhooks.bus.event_bus_arn],
            Target.WEBHOOK_QUEUE: [self.webhooks.queue.queue_arn],
            Target.WEBHOOK_DLQ: [self.webhooks.dlq.queue_arn],
            Target.WEBHOOK_SECRET: [self.webhooks.secret.secret_arn],
        }
        handlers = (
            self.api.handler,
            self.streams.handler,
            self.worker.handler,
            self.housekeeping.handler,
            self.notifier.handler,
            self.webhook_sender,
        )
        for fn in handlers:
            for access in GRANTS[fn.spec.logical_id]:
                iam.Grant.add_to_principal(
                    grantee=fn.alias, actions=list(access.actions), resource_arns=arns[access.on]
                )
            if any(access.on is Target.PAYLOAD_OBJECTS for access in GRANTS[fn.spec.logical_id]):
                acknowledge(
                    fn,
                    {
                        self._objects_finding(storage.payload_bucket.node.default_child): (
                            "Checkpoint payload objects are keyed by thread and checkpoint id, "
                            "unknown in advance: the grant covers the objects of this one bucket."
                        ),
                    },
                )

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
        CfnOutput(self, "CacheTableName", value=self.storage.cache_table.table_name)
        CfnOutput(self, "MemoryTableName", value=self.storage.memory_table.table_name)
        CfnOutput(self, "PayloadBucketName", value=self.storage.payload_bucket.bucket_name)
        for priority, spec in STEP_QUEUES.items():
            CfnOutput(self, f"{spec.logical_id}Url", value=self.queues.queues[priority].queue_url)
            CfnOutput(self, f"{spec.logical_id}DlqUrl", value=self.queues.dlqs[priority].queue_url)
        CfnOutput(self, "DashboardName", value=self.monitoring.dashboard.dashboard_name)
        CfnOutput(
            self,
            "ApprovalStateMachineArn",
            value=self.approvals.state_machine.state_machine_arn,
        )
        CfnOutput(self, "ApprovalQueueUrl", value=self.approvals.queue.queue_url)
        CfnOutput(self, "ApprovalDlqUrl", value=self.approvals.dlq.queue_url)

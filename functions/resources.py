"""Resource definitions shared by the CDK app (``infra/``) and the local stack.

This module is the single source of truth for every table key schema, queue setting and
environment variable name. ``infra`` imports it; nothing here imports CDK, so the Lambda
code asset stays free of it. Physical names are logical here: CDK lets CloudFormation
name resources, the local stack uses ``local_name()``; either way functions find them
through the environment variables below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")

SERVICE_NAME = "lambdagraph"
METRICS_NAMESPACE = "lambdagraph"


@dataclass(frozen=True)
class Index:
    name: str
    partition_key: str
    sort_key: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """A DynamoDB table: string keys, on-demand billing, optional TTL attribute."""

    logical_id: str
    partition_key: str
    sort_key: str | None
    ttl_attribute: str | None = "ttl"
    global_indexes: tuple[Index, ...] = ()
    env_var: str = ""

    def create_table_request(self, table_name: str) -> dict[str, Any]:
        """``CreateTable`` parameters for this spec (local stack, ``setup()``, tests).

        CDK builds the same table from the same fields; this is its boto3 counterpart.
        """
        keys = [self.partition_key, *([self.sort_key] if self.sort_key else [])]
        for index in self.global_indexes:
            keys += [index.partition_key, *([index.sort_key] if index.sort_key else [])]
        request: dict[str, Any] = {
            "TableName": table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": key, "AttributeType": "S"} for key in dict.fromkeys(keys)
            ],
            "KeySchema": _key_schema(self.partition_key, self.sort_key),
        }
        if self.global_indexes:
            request["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index.name,
                    "KeySchema": _key_schema(index.partition_key, index.sort_key),
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index in self.global_indexes
            ]
        return request

    def ensure_table(self, client: Any, table_name: str) -> None:
        """Create the table (and turn its TTL on) when it is missing: the local stack's and
        tests' ``setup()``; idempotent, and safe when another process creates it too."""
        from botocore.exceptions import ClientError

        try:
            client.describe_table(TableName=table_name)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        try:
            client.create_table(**self.create_table_request(table_name))
        except ClientError as exc:
            # Another process created it between our describe and create: that is fine.
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        client.get_waiter("table_exists").wait(TableName=table_name)
        if self.ttl_attribute:
            client.update_time_to_live(
                TableName=table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": self.ttl_attribute},
            )


def _key_schema(partition_key: str, sort_key: str | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": partition_key, "KeyType": "HASH"}]
    if sort_key:
        schema.append({"AttributeName": sort_key, "KeyType": "RANGE"})
    return schema


@dataclass(frozen=True)
class QueueSpec:
    """An SQS queue with its dead-letter queue."""

    logical_id: str
    env_var: str
    visibility_timeout_s: int
    max_receive_count: int = 5
    retention_s: int = 14 * 24 * 3600
    # Per-queue ESM MaximumConcurrency on AWS (None = no event source mapping).
    max_concurrency: int | None = None
    batch_size: int = 1
    dlq_env_var: str | None = None


@dataclass(frozen=True)
class BucketSpec:
    logical_id: str
    env_var: str


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function: every function shares the one code asset; only the handler differs."""

    logical_id: str
    handler: str
    timeout_s: int
    memory_mb: int
    env: tuple[str, ...] = field(default_factory=tuple)
    # Concurrency reserved for the function on AWS (None = the account's shared pool).
    reserved_concurrency: int | None = None
    # The Python callable serving its requests when ``handler`` is a start script, not a
    # ``module.attribute`` (a web server under Lambda Web Adapter); "" = ``handler`` is it.
    entry: str = ""


# --- storage -------------------------------------------------------------------------------

CHECKPOINT_TABLE = TableSpec(
    logical_id="Checkpoints",
    partition_key="pk",
    sort_key="sk",
    ttl_attribute="ttl",
    env_var="LAMBDAGRAPH_CHECKPOINT_TABLE",
)

RUNTIME_TABLE = TableSpec(
    logical_id="Runtime",
    partition_key="pk",
    sort_key="sk",
    ttl_attribute="ttl",
    global_indexes=(Index(name="gsi1", partition_key="gsi1pk", sort_key="gsi1sk"),),
    env_var="LAMBDAGRAPH_RUNTIME_TABLE",
)

# LangGraph's node cache (functions/cache): entries expire by their CachePolicy's ttl.
CACHE_TABLE = TableSpec(
    logical_id="NodeCache",
    partition_key="pk",
    sort_key="sk",
    ttl_attribute="expires_at",
    env_var="LAMBDAGRAPH_CACHE_TABLE",
)

# LangGraph's long-term memory store (functions/memory): memories expire only when put with
# a ttl (BaseStore TTL, minutes), on ``expires_at``.
MEMORY_TABLE = TableSpec(
    logical_id="Memory",
    partition_key="pk",
    sort_key="sk",
    ttl_attribute="expires_at",
    env_var="LAMBDAGRAPH_MEMORY_TABLE",
)

PAYLOAD_BUCKET = BucketSpec(logical_id="Payloads", env_var="LAMBDAGRAPH_PAYLOAD_BUCKET")

# --- functions -----------------------------------------------------------------------------

STEP_WORKER_TIMEOUT_S = 300
# A claimed step's lease outlives the invocation that claimed it: when a lease has expired,
# its worker is certainly dead (Lambda killed it at the function timeout), so taking the
# step over can never run it twice. The heartbeat extends it while a long node runs.
STEP_LEASE_S = STEP_WORKER_TIMEOUT_S + 60

# --- the API's 29-second wall --------------------------------------------------------------
#
# API Gateway (REST) gives up on an integration after 29 s and answers 504, whatever the
# function does afterwards. A cold ``runs/wait`` spends, in order: the container's init
# (imports, clients: not counted in the function timeout), creating the run, the join's wait,
# then loading the graph and reading the state it answers with. Each part gets a budget here
# and the join waits only for what is left, so the whole request answers before the wall
# with the run as it is (``make bench``'s bench.coldstart measures the init).
API_GATEWAY_TIMEOUT_S = 29
# Init of a cold API container on Lambda (arm64, 1 GB, bytecode shipped), with margin.
API_COLD_START_S = 5
# Creating the run before the join, loading the graph and reading the state after it.
API_REQUEST_WORK_S = 3
# Network between API Gateway and Lambda, clock skew: never cut it fine.
API_MARGIN_S = 1
# The function dies before the gateway gives up on it, even after a slow init.
API_FUNCTION_TIMEOUT_S = API_GATEWAY_TIMEOUT_S - API_COLD_START_S - API_MARGIN_S
# How long join / runs/wait block before answering with the run as it is.
API_JOIN_TIMEOUT_S = API_FUNCTION_TIMEOUT_S - API_REQUEST_WORK_S - API_MARGIN_S
# How often the join re-reads the run (one strongly consistent GetItem each, see the cost
# model in docs/deploy.md): 0.25 s adds at most that to a wait's answer.
API_JOIN_POLL_S = 0.25

API_FUNCTION = FunctionSpec(
    "Api", "functions.handlers.api.handler", timeout_s=API_FUNCTION_TIMEOUT_S, memory_mb=1024
)
HOUSEKEEPING_FUNCTION = FunctionSpec(
    "Housekeeping", "functions.handlers.housekeeping.handler", timeout_s=120, memory_mb=512
)
# Human approval (functions/approvals): emails reviewers, resumes threads.
APPROVAL_NOTIFIER_FUNCTION = FunctionSpec(
    "ApprovalNotifier", "functions.handlers.approvals.handler", timeout_s=60, memory_mb=512
)

# --- streams (functions/streaming, docs/streaming.md) -------------------------------------

# API Gateway ends a streamed response after 15 minutes; the stream function lives as long.
STREAM_GATEWAY_LIMIT_S = 15 * 60
# A stream response ends this long before the gateway's limit (``LAMBDAGRAPH_STREAM_MAX_S``):
# the SDK sees the run still active and reconnects with ``Last-Event-ID``; the margin covers
# the run's creation and the last poll.
STREAM_MAX_S = STREAM_GATEWAY_LIMIT_S - 60
# Lambda Web Adapter's traffic port, and the path it checks readiness on
# (``functions/handlers/stream.py`` answers it).
STREAM_PORT = 8080
STREAM_READINESS_PATH = "/ok"
# The stream routes as a web server under Lambda Web Adapter: Lambda runs the start script
# (AWS_LAMBDA_EXEC_WRAPPER), which runs ``functions.handlers.stream``.
STREAM_FUNCTION = FunctionSpec(
    "Stream",
    "functions/handlers/run_stream.sh",
    timeout_s=STREAM_GATEWAY_LIMIT_S,
    memory_mb=1024,
    entry="functions.handlers.stream.serve",
)

# --- webhooks (functions/webhooks, docs/webhooks.md) ---------------------------------------

# The run-ended event every run ending puts on the lambdagraph bus (README, "Webhooks").
RUN_EVENTS_SOURCE = "lambdagraph"
RUN_ENDED_DETAIL_TYPE = "Run Ended"
EVENT_BUS_ENV = "LAMBDAGRAPH_EVENT_BUS_NAME"
# Events of runs with a ``webhook`` go to the deliveries queue.
WEBHOOK_RULE_PATTERN: dict[str, Any] = {
    "source": [RUN_EVENTS_SOURCE],
    "detail-type": [RUN_ENDED_DETAIL_TYPE],
    "detail": {"webhook": [{"exists": True}]},
}
# How long the bus archive keeps events for replay.
EVENT_ARCHIVE_RETENTION_DAYS = 7
# One POST waits at most this long for the receiver's answer.
WEBHOOK_HTTP_TIMEOUT_S = 10
WEBHOOK_FUNCTION = FunctionSpec(
    "WebhookSender", "functions.handlers.webhooks.handler", timeout_s=30, memory_mb=512
)

# --- queues --------------------------------------------------------------------------------

# Visibility timeout is six times the function timeout, as AWS recommends for SQS sources.
_STEP_VISIBILITY_S = 6 * STEP_WORKER_TIMEOUT_S

STEP_QUEUES: dict[Priority, QueueSpec] = {
    "high": QueueSpec(
        "StepQueueHigh",
        "LAMBDAGRAPH_QUEUE_URL_HIGH",
        _STEP_VISIBILITY_S,
        max_concurrency=50,
        dlq_env_var="LAMBDAGRAPH_DLQ_URL_HIGH",
    ),
    "normal": QueueSpec(
        "StepQueueNormal",
        "LAMBDAGRAPH_QUEUE_URL_NORMAL",
        _STEP_VISIBILITY_S,
        max_concurrency=20,
        dlq_env_var="LAMBDAGRAPH_DLQ_URL_NORMAL",
    ),
    "low": QueueSpec(
        "StepQueueLow",
        "LAMBDAGRAPH_QUEUE_URL_LOW",
        _STEP_VISIBILITY_S,
        max_concurrency=5,
        dlq_env_var="LAMBDAGRAPH_DLQ_URL_LOW",
    ),
}


# The approval state machine's token and resume messages (functions/approvals).
APPROVAL_QUEUE = QueueSpec(
    "ApprovalRequests",
    "LAMBDAGRAPH_APPROVAL_QUEUE_URL",
    visibility_timeout_s=6 * 60,
    max_concurrency=5,
    batch_size=1,
)
APPROVAL_STATE_MACHINE_LOGICAL_ID = "ApprovalStateMachine"

# The webhook sender: a failed attempt is retried by changing the message's visibility (the
# sender counts attempts itself and parks the last failure in the DLQ); maxReceiveCount is only
# the backstop for a sender that crashes on a message again and again.
WEBHOOK_QUEUE = QueueSpec(
    "WebhookDeliveries",
    "LAMBDAGRAPH_WEBHOOK_QUEUE_URL",
    6 * WEBHOOK_FUNCTION.timeout_s,
    max_receive_count=30,
    max_concurrency=10,
    batch_size=1,
    dlq_env_var="LAMBDAGRAPH_WEBHOOK_DLQ_URL",
)


# The worker's own concurrency: every queue's MaximumConcurrency at once, so a burst of API
# waits (each holding an execution for up to API_JOIN_TIMEOUT_S) cannot take it from the worker
# and throttled batches never count toward a DLQ. The account needs this much plus 100
# unreserved (docs/deploy.md, first deploy checklist).
STEP_WORKER_RESERVED_CONCURRENCY = sum(spec.max_concurrency or 0 for spec in STEP_QUEUES.values())

STEP_WORKER_FUNCTION = FunctionSpec(
    "StepWorker",
    "functions.handlers.step_worker.handler",
    timeout_s=STEP_WORKER_TIMEOUT_S,
    memory_mb=1024,
    reserved_concurrency=STEP_WORKER_RESERVED_CONCURRENCY,
)


def local_name(logical_id: str) -> str:
    """Physical name the local stack gives a resource (CDK lets CloudFormation name them)."""
    return f"lambdagraph-{logical_id.lower()}"


# --- API (AWS) -----------------------------------------------------------------------------

# Stage-wide API Gateway throttling (steady requests per second, burst). Clients get 429.
API_THROTTLE_RATE_RPS = 100
API_THROTTLE_BURST = 200
# Largest request body the API accepts (413 above). API Gateway's own cap is 10 MB; the
# API function enforces this one.
API_MAX_BODY_BYTES = 1024 * 1024
# CORS (functions/api_cors.py): what a page from an allowed origin may do and read.
CORS_ALLOW_METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CORS_EXPOSE_HEADERS: tuple[str, ...] = ("Content-Location", "Location")
# Browsers cache a preflight this long (Chromium caps it at 2 hours).
CORS_MAX_AGE_S = 7200

# --- housekeeping schedule -----------------------------------------------------------------

HOUSEKEEPING_RATE_MINUTES = 5


@dataclass(frozen=True)
class StepTimings:
    """The timings a run's recovery depends on, checked together (CDK and local stack).

    - ``visibility_timeout_s`` > ``lease_s`` > ``function_timeout_s``: a step message comes
      back only after its claim's lease expired, and a lease expires only after the
      invocation holding it is dead.
    - ``housekeeping_every_s``: how often expired leases are looked at.
    """

    function_timeout_s: float
    lease_s: float
    visibility_timeout_s: float
    housekeeping_every_s: float

    def check(self) -> None:
        """ValueError unless visibility > lease > function timeout."""
        if not self.lease_s > self.function_timeout_s:
            raise ValueError(
                f"step lease {self.lease_s}s must exceed the step worker timeout "
                f"{self.function_timeout_s}s: a lease must outlive the invocation holding it"
            )
        if not self.visibility_timeout_s > self.lease_s:
            raise ValueError(
                f"step queue visibility timeout {self.visibility_timeout_s}s must exceed the "
                f"step lease {self.lease_s}s: a message must not come back while its claim lives"
            )

    def scaled(self, factor: float) -> StepTimings:
        """The same timings divided by ``factor`` (the local stack's faster clock)."""
        return StepTimings(
            self.function_timeout_s / factor,
            self.lease_s / factor,
            self.visibility_timeout_s / factor,
            self.housekeeping_every_s / factor,
        )


# The deployed timings (CDK reads them; the crash-point tests replay them on a simulated clock).
STEP_TIMINGS = StepTimings(
    function_timeout_s=STEP_WORKER_TIMEOUT_S,
    lease_s=STEP_LEASE_S,
    visibility_timeout_s=_STEP_VISIBILITY_S,
    housekeeping_every_s=HOUSEKEEPING_RATE_MINUTES * 60,
)
STEP_TIMINGS.check()

# --- observability -------------------------------------------------------------------------

LOG_RETENTION_DAYS = 30
# Powertools Metrics names (namespace METRICS_NAMESPACE, dimension ``service`` = SERVICE_NAME)
# that the step worker emits and the CloudWatch dashboard and alarms read.
METRIC_STEP_DURATION = "StepDuration"  # milliseconds, one per superstep
METRIC_QUEUE_WAIT = "QueueWait"  # milliseconds from enqueue to step start
METRIC_STEPS = "Steps"  # count, one per superstep executed
# count, one per step attempt that failed outside a node (retried, or ending the run): what a
# bad release of the shared code asset produces first (a canary alarm reads it)
METRIC_STEP_FAILURES = "StepFailures"
# count, one per API answer with a 5xx status (functions/api_app.py's error handlers), also
# per function version (dimension METRIC_VERSION_DIMENSION): a canary alarm reads the new
# version's.
METRIC_API_SERVER_ERRORS = "ApiServerErrors"
# Dimension (besides ``service``) naming the Lambda version that emitted a metric.
METRIC_VERSION_DIMENSION = "function_version"
RUN_FINAL_STATUSES: tuple[str, ...] = ("success", "error", "timeout", "interrupted")


def run_status_metric(status: str) -> str:
    """Metric counting runs that ended with ``status`` (e.g. ``RunsSuccess``)."""
    return f"Runs{status.capitalize()}"


# Alarm thresholds.
ALARM_STEP_DURATION_P95_MS = 60_000
# Age of the oldest message per priority queue: high work must start quickly.
# A backlog: messages waiting (visible) while the oldest is this old, for 3 minutes running.
ALARM_OLDEST_MESSAGE_AGE_S: dict[Priority, int] = {"high": 60, "normal": 300, "low": 1800}
# API requests slower than any legitimate one (a runs/wait blocks API_JOIN_TIMEOUT_S, plus
# its work): the 29 s wall is near.
ALARM_API_LATENCY_P99_MS = (API_JOIN_TIMEOUT_S + API_REQUEST_WORK_S) * 1000

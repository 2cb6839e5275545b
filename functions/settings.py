"""Settings parsed once from the environment (set by CDK on AWS and by the local stack).

Handlers read settings, never ``os.environ`` directly. ``AWS_ENDPOINT_URL`` (honoured by
boto3 itself) points every client at moto locally.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from functions.resources import API_JOIN_TIMEOUT_S, STEP_LEASE_S, STEP_TIMINGS

# Model settings and the parsers that check them when settings are read (functions/models).
_MODEL_TABLES = {
    "models": ("functions.models.routing", "parse_routes"),
    "run_models": ("functions.models.routing", "parse_run_models"),
    "model_limits": ("functions.models.limits", "parse_limits"),
    "model_prices": ("functions.models.prices", "parse_prices"),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAMBDAGRAPH_", extra="ignore")

    checkpoint_table: str = "lambdagraph-checkpoints"
    runtime_table: str = "lambdagraph-runtime"
    payload_bucket: str | None = None
    # The node cache table (functions/cache, docs/models.md "Node caching"); empty = no
    # cache: a node's ``CachePolicy`` then runs it every time.
    cache_table: str = ""
    # The long-term memory store's table (functions/memory, docs/memory.md); empty = graphs
    # get no store (``get_store()`` finds none), as before.
    memory_table: str = ""
    queue_url_high: str = ""
    queue_url_normal: str = ""
    queue_url_low: str = ""
    dlq_url_high: str = ""
    dlq_url_normal: str = ""
    dlq_url_low: str = ""
    # Comma-separated API keys for the local stack; empty = auth off (warned at start-up).
    api_keys: str = ""
    # How long join / runs/wait block before answering with the run as it is: by default what
    # the API's 29-second wall leaves (functions.resources, "the API's 29-second wall").
    join_timeout_s: float = Field(default=API_JOIN_TIMEOUT_S, gt=0)
    # Lease a worker holds on a claimed step; a crashed step is retried after it expires.
    lease_s: float = Field(default=STEP_LEASE_S, gt=0)
    # Optional retention for checkpoints and runtime records (0 = keep forever).
    ttl_days: int = Field(default=0, ge=0)
    # Use the deterministic offline chat model even if model credentials exist.
    offline_model: bool = False
    # --- run path (functions/runs.py, step worker, API) ---
    # On AWS, API keys live hashed in the runtime table (``APIKEY#<sha256>`` items) instead
    # of in ``api_keys``; both can be used at once.
    api_keys_in_table: bool = False
    # ``provider:model`` (functions/models/factory.py: openai:, bedrock:, fake:); empty =
    # the offline model. Checked when settings are read, so a typo fails at start-up.
    chat_model: str = ""
    # ``dynamodb`` (functions.checkpoint.DynamoDBSaver) or ``memory`` (one process only).
    checkpointer: str = "dynamodb"
    # How often join / runs/wait re-read the run while blocking.
    join_poll_s: float = Field(default=0.05, gt=0)
    # Receive count at which a failing step message is given up (the queues' maxReceiveCount).
    max_receive_count: int = Field(default=5, gt=0)
    # Attempts at one step (counted on the run, whoever re-sent it) before the run ends
    # ``error``; the same for the effects of an unfinished run ending.
    max_step_attempts: int = Field(default=5, gt=0)
    # Deployment-wide budget: the most supersteps a run may take (0 = no limit beyond the
    # recursion limit); a run's ``budget.max_steps`` replaces it.
    budget_max_steps: int = Field(default=0, ge=0)
    # The same for model tokens (input + output) and cost in USD (0 = no limit); a run's
    # ``budget.max_tokens`` / ``budget.max_cost_usd`` replace them (docs/models.md).
    budget_max_tokens: int = Field(default=0, ge=0)
    budget_max_cost_usd: float = Field(default=0.0, ge=0)
    # Model prices (JSON, USD per million tokens) added to or replacing the built-in table
    # (functions/models/prices.py); checked when settings are read.
    model_prices: str = ""
    # Models per node (JSON {"<graph>.<node>" or "<node>": "provider:model"}) and the models a
    # run may pick in ``config.configurable.models`` (comma-separated): routing.py.
    models: str = ""
    run_models: str = ""
    # LangSmith's own switch (``LANGSMITH_TRACING``, or the older ``LANGCHAIN_TRACING_V2``):
    # LangChain traces by itself; the step worker only sends what is queued before Lambda
    # freezes the process.
    langsmith_tracing: bool = Field(
        default=False,
        validation_alias=AliasChoices("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"),
    )
    # On AWS: the Secrets Manager secret holding the OpenAI API key (infra/constructs/models.py).
    openai_api_key_secret_arn: str = ""
    # Shared rate limits and circuit breakers per model (JSON: {"model": {"rpm", "tpm",
    # "burst", "fallback"}}, functions/models/limits.py); empty = calls are not gated.
    model_limits: str = ""
    # The share of each model's buckets kept for ``high`` runs (``low`` leave twice that).
    rate_reserve_high: float = Field(default=0.2, ge=0, le=0.45)
    # Consecutive failed calls that open a model's breaker, and how long it stays open.
    breaker_failures: int = Field(default=5, gt=0)
    breaker_cooldown_s: float = Field(default=60.0, gt=0)
    # A managed model call not answered after this long is a timeout (retried, counted by
    # the breaker); 0 = no limit. Under the step worker's 300 s function timeout.
    model_timeout_s: float = Field(default=120.0, ge=0, lt=300)
    # Times a step may be deferred for want of model capacity before its run ends ``error``.
    max_deferrals: int = Field(default=200, gt=0)
    # The step queues' visibility timeout: a message a dead worker held comes back after it.
    visibility_timeout_s: float = Field(default=STEP_TIMINGS.visibility_timeout_s, gt=0)
    # After a step is done, how long the next step may wait unclaimed before housekeeping
    # re-sends it. The message itself is durable in SQS and a crash right after the step is
    # recovered by its redelivery, so this is only a backstop, long enough not to duplicate
    # messages that merely wait in a backlog.
    resend_after_s: float = Field(default=STEP_TIMINGS.visibility_timeout_s, gt=0)
    # Each further re-send of the same unclaimed step waits twice as long, up to this; after
    # ``max_step_resends`` re-sends (about a day with the defaults) the run ends ``error``.
    resend_max_interval_s: float = Field(default=3600, gt=0)
    max_step_resends: int = Field(default=24, gt=0)
    # How often a long step renews its claim's lease (0 = a third of the lease).
    heartbeat_s: float = Field(default=0, ge=0)
    # Origins whose pages may call the API (CORS, functions/api_cors.py): comma-separated
    # ``scheme://host[:port]``, ``*`` for any; empty = none.
    cors_origins: str = ""
    # Longest a state update (POST /threads/{id}/state) holds its thread.
    state_hold_s: float = Field(default=60, gt=0)
    # --- human approval (functions/approvals, README "Human approval") ---
    approval_state_machine_arn: str = ""
    approval_queue_url: str = ""
    # The link-signing key: from this variable locally, from Secrets Manager on AWS.
    approval_signing_key: str = ""
    approval_signing_secret_arn: str = ""
    # SES sender of approval emails (a verified identity).
    approval_sender: str = "approvals@lambdagraph.local"
    # Reviewers when the request names none (comma-separated emails).
    reviewers: str = ""
    approval_timeout_s: int = Field(default=72 * 3600, gt=0)
    # Where reviewers' links point: the API's public URL (no trailing slash needed).
    public_base_url: str = ""
    # --- streams (functions/streaming) ---
    # A stream response ends after this (API Gateway cuts streamed responses at 15 minutes);
    # the SDK reconnects with Last-Event-ID and goes on.
    stream_max_s: float = Field(default=840, gt=0)
    # How often a stream reads the run's event log while events come; comment heartbeats.
    stream_poll_s: float = Field(default=0.03, gt=0)
    stream_heartbeat_s: float = Field(default=5, gt=0)
    # --- webhooks (functions/webhooks, docs/webhooks.md) ---
    # The bus run-ended events go to; empty = no events (and so no webhooks).
    event_bus_name: str = ""
    webhook_queue_url: str = ""
    webhook_dlq_url: str = ""
    # Signing secrets (``whsec_...``), comma-separated, all active: locally from here; on
    # AWS from the Secrets Manager secret ``webhook_secret_arn`` (same format).
    webhook_secret: str = ""
    webhook_secret_arn: str = ""
    # Seconds before each retry of a failed delivery (about a day in all).
    webhook_retry_delays: str = "5,30,120,600,1800,3600,10800,21600,43200"
    # Webhook URLs must be https (AWS); the local stack allows http.
    webhook_require_https: bool = True
    # Allow loopback/private targets (the local stack: true unless set false).
    webhook_allow_private: bool = False

    # --- graphs (graphs/registry.py, docs/projects.md) ---
    # A LangGraph project's langgraph.json (or its directory) whose graphs join the built-in
    # ones; empty = a langgraph.json at the checkout's root, if any. The registry reads it
    # when imported; here its shape is checked when settings are read, so a typo fails fast.
    project: str = ""

    @field_validator("project")
    @classmethod
    def _readable_project(cls, value: str) -> str:
        from graphs.project import find_project, read_project

        path = find_project(value)
        if path is not None:
            read_project(path)
        return value.strip()

    @field_validator("chat_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value.strip():
            from functions.models.factory import parse_spec

            parse_spec(value)
        return value.strip()

    @field_validator(*_MODEL_TABLES)
    @classmethod
    def _model_table(cls, value: str, info: ValidationInfo) -> str:
        # Parsed by the module that uses it, so a typo fails at start-up, not in a run.
        module, parser = _MODEL_TABLES[str(info.field_name)]
        getattr(importlib.import_module(module), parser)(value)
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

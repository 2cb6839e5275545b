"""Request bodies of the LangGraph-Platform-shaped API (field names as ``langgraph_sdk`` sends).

Unknown fields the SDK may send (``stream_mode``, ``durability``, ...) are accepted and
ignored; fields we cannot honour are rejected with 422 where silently ignoring them would
mislead.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.resources import Priority

MultitaskStrategy = Literal["reject", "interrupt", "rollback", "enqueue"]
CancelAction = Literal["interrupt", "rollback"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ThreadCreate(_Body):
    thread_id: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    ttl: Any = None


class ThreadPatch(_Body):
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: Any = None


class ThreadSearch(_Body):
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    ids: list[str] | None = None
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None


class RunCommand(_Body):
    resume: Any = None
    update: Any = None
    goto: Any = None


class CheckpointRef(_Body):
    thread_id: str | None = None
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None


class Budget(BaseModel):
    """Limits a run stops at, at the next step boundary (docs/models.md, "Budgets"); a
    limit left out falls back to the deployment's default."""

    model_config = ConfigDict(extra="forbid")
    max_steps: int | None = Field(default=None, gt=0, le=100_000)
    # Model tokens, input + output, over all the run's model calls.
    max_tokens: int | None = Field(default=None, gt=0, le=10**12)
    max_cost_usd: float | None = Field(default=None, gt=0, le=10**9, allow_inf_nan=False)


class RunCreate(_Body):
    assistant_id: str = Field(min_length=1)
    input: Any = None
    command: RunCommand | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None
    interrupt_before: Any = None
    interrupt_after: Any = None
    webhook: str | None = None
    # Extension: limits the run stops at (``max_steps``, ``max_tokens``, ``max_cost_usd``).
    budget: Budget | None = None
    multitask_strategy: MultitaskStrategy = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    # Start the run this many seconds later (SQS DelaySeconds caps it at 15 minutes).
    after_seconds: int | None = Field(default=None, ge=0, le=900)
    # Extension: which step queue carries the run.
    priority: Priority = "normal"
    # Streams (functions/streaming): which events the worker publishes for the run.
    stream_mode: list[str] | None = None
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    # What a stream route does when its client goes away: the run goes on (``continue``) or
    # is cancelled as ``POST .../cancel`` does (``cancel``; functions/streaming/http.py).
    # Accepted on every create route as the official server does; only a stream acts on it.
    on_disconnect: Literal["cancel", "continue"] = "continue"

    @field_validator("stream_mode", mode="before")
    @classmethod
    def _stream_modes(cls, value: Any) -> list[str] | None:
        from functions.streaming.modes import normalise

        return normalise(value)

    def without_stream(self) -> RunCreate:
        """The same run publishing no stream events (``runs/wait``, a background run)."""
        return self.model_copy(update={"stream_mode": None})

    def start_checkpoint_id(self) -> str | None:
        if self.checkpoint_id:
            return self.checkpoint_id
        return self.checkpoint.checkpoint_id if self.checkpoint else None

    def run_kwargs(self) -> dict[str, Any]:
        """What the worker needs to start the run, stored on the run record."""
        kwargs: dict[str, Any] = {
            "input": self.input,
            "command": self.command.model_dump(exclude_none=True) if self.command else None,
            "config": _client_config(self.config),
            "context": self.context or {},
            "checkpoint_id": self.start_checkpoint_id(),
            "webhook": self.webhook,
            "after_seconds": self.after_seconds or 0,
        }
        if self.budget is not None:
            kwargs["budget"] = self.budget.model_dump(exclude_none=True)
        if self.stream_mode:
            kwargs["stream"] = {"modes": self.stream_mode, "subgraphs": self.stream_subgraphs}
        return kwargs


# Keys of ``config.configurable`` that only the runtime may set: the thread and checkpoint a
# step runs on, and langgraph's internal ``__pregel_*`` keys. From a client they would point a
# step at another thread's or checkpoint's state.
_RESERVED_CONFIGURABLE = frozenset(
    {"thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map"}
)


def _client_config(config: dict[str, Any] | None) -> dict[str, Any]:
    if not config:
        return {}
    configurable = config.get("configurable")
    if not isinstance(configurable, dict):
        return {k: v for k, v in config.items() if k != "configurable"}
    kept = {
        k: v
        for k, v in configurable.items()
        if k not in _RESERVED_CONFIGURABLE and not k.startswith("__")
    }
    return {**config, "configurable": kept}


class StateUpdate(_Body):
    values: Any = None
    as_node: str | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None


class StateAtCheckpoint(_Body):
    checkpoint: CheckpointRef
    subgraphs: bool = False


class HistoryQuery(_Body):
    limit: int = Field(default=10, ge=1, le=1000)
    before: CheckpointRef | str | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None


class AssistantSearch(_Body):
    graph_id: str | None = None
    metadata: dict[str, Any] | None = None
    name: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)

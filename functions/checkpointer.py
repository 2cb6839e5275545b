"""The one place that decides which checkpointer the engine uses."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger

from functions.settings import Settings

logger = Logger(child=True)


def make_checkpointer(settings: Settings) -> Any:
    """A checkpointer for ``settings``, shared by every graph in this process."""
    return _cached(
        settings.checkpointer, settings.checkpoint_table, settings.payload_bucket, settings.ttl_days
    )


@lru_cache(maxsize=8)
def _cached(kind: str, table: str, bucket: str | None, ttl_days: int = 0) -> Any:
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver()
    from functions.checkpoint import DynamoDBSaver

    # The same retention as the runtime records (LAMBDAGRAPH_TTL_DAYS; 0 = keep forever).
    ttl_seconds = ttl_days * 24 * 3600 if ttl_days > 0 else None
    return DynamoDBSaver(table, bucket_name=bucket, ttl_seconds=ttl_seconds)

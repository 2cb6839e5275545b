"""The one place that decides which checkpointer the engine uses."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger

from functions.settings import Settings

logger = Logger(child=True)


def make_checkpointer(settings: Settings) -> Any:
    """A checkpointer for ``settings``, shared by every graph in this process."""
    return _cached(settings.checkpointer, settings.checkpoint_table, settings.payload_bucket)


@lru_cache(maxsize=8)
def _cached(kind: str, table: str, bucket: str | None) -> Any:
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver()
    from functions.checkpoint import DynamoDBSaver

    return DynamoDBSaver(table, bucket_name=bucket)

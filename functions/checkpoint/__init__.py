"""LangGraph checkpointing on DynamoDB (with S3 for large values).

``from functions.checkpoint import DynamoDBSaver`` — see ``saver.py`` for the data model and
``docs/checkpointer.md`` for the measured costs.
"""

from functions.checkpoint.errors import (
    CheckpointBucketMissingError,
    CheckpointDecodeError,
    CheckpointError,
    CheckpointReadError,
    CheckpointTableMissingError,
    CheckpointTooLargeError,
    CheckpointWriteError,
)
from functions.checkpoint.saver import DynamoDBSaver

__all__ = [
    "CheckpointBucketMissingError",
    "CheckpointDecodeError",
    "CheckpointError",
    "CheckpointReadError",
    "CheckpointTableMissingError",
    "CheckpointTooLargeError",
    "CheckpointWriteError",
    "DynamoDBSaver",
]

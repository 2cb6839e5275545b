"""Errors a user of the checkpointer can hit, each saying what happened and what to do."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class of the checkpointer's own errors."""


class CheckpointTableMissingError(CheckpointError):
    def __init__(self, table_name: str) -> None:
        super().__init__(
            f"DynamoDB table {table_name!r} does not exist: run DynamoDBSaver.setup() "
            "(local / tests) or deploy the stack that creates it (AWS)."
        )
        self.table_name = table_name


class CheckpointBucketMissingError(CheckpointError):
    def __init__(self, bucket_name: str | None, detail: str = "") -> None:
        if bucket_name is None:
            message = (
                "a value is larger than a DynamoDB item can hold (400 KB) and no S3 bucket "
                "is configured: pass bucket_name= to DynamoDBSaver"
            )
        else:
            message = (
                f"S3 bucket {bucket_name!r} does not exist: run DynamoDBSaver.setup() "
                "or deploy the stack that creates it"
            )
        super().__init__(f"{message}{f' ({detail})' if detail else ''}")
        self.bucket_name = bucket_name


class CheckpointDecodeError(CheckpointError):
    """A stored item could not be read back; names the item so it can be inspected."""

    def __init__(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str, reason: str) -> None:
        super().__init__(
            f"cannot read checkpoint {checkpoint_id!r} of thread {thread_id!r} "
            f"(namespace {checkpoint_ns!r}): {reason}"
        )
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.checkpoint_id = checkpoint_id

"""Errors a user of the checkpointer can hit, each saying what happened and what to do.

Reading and writing fail differently: a ``CheckpointReadError`` names the checkpoint that
could not be read back, a ``CheckpointWriteError`` what could not be stored. AWS errors
(throttling, networking) are not wrapped: they stay botocore's, so callers can retry them.
"""

from __future__ import annotations

# DynamoDB's item size limit, named in the errors that hit it.
ITEM_LIMIT_TEXT = "400 KB"
BUCKET_SETTING = "LAMBDAGRAPH_PAYLOAD_BUCKET"


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
    """The S3 payload bucket is needed but not configured, or does not exist."""

    def __init__(self, bucket_name: str | None, detail: str = "") -> None:
        if bucket_name is None:
            message = (
                f"a value is larger than a DynamoDB item can hold ({ITEM_LIMIT_TEXT}) and no S3 "
                f"bucket is configured: set {BUCKET_SETTING} (bucket_name= of DynamoDBSaver)"
            )
        else:
            message = (
                f"S3 bucket {bucket_name!r} does not exist: run DynamoDBSaver.setup() "
                "or deploy the stack that creates it"
            )
        super().__init__(f"{message}{f' ({detail})' if detail else ''}")
        self.bucket_name = bucket_name


class CheckpointReadError(CheckpointError):
    """A stored checkpoint could not be read back; names it so it can be inspected."""

    def __init__(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str, reason: str) -> None:
        super().__init__(
            f"cannot read checkpoint {checkpoint_id!r} of thread {thread_id!r} "
            f"(namespace {checkpoint_ns!r}): {reason}"
        )
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.checkpoint_id = checkpoint_id
        self.reason = reason


class CheckpointDecodeError(CheckpointReadError):
    """A stored item is there but does not decode (damaged, or written by a newer format)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint or a task's writes could not be stored; says which and why."""

    def __init__(self, thread_id: str, checkpoint_ns: str, what: str, reason: str) -> None:
        CheckpointError.__init__(
            self,
            f"cannot write {what} of thread {thread_id!r} (namespace {checkpoint_ns!r}): {reason}",
        )
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.what = what
        self.reason = reason


class CheckpointTooLargeError(CheckpointWriteError, CheckpointBucketMissingError):
    """A write larger than a DynamoDB item with no payload bucket to put it in."""

    def __init__(self, thread_id: str, checkpoint_ns: str, what: str, part: str, size: int) -> None:
        CheckpointWriteError.__init__(
            self,
            thread_id,
            checkpoint_ns,
            what,
            f"{part} is {size:,} bytes, more than a DynamoDB item holds ({ITEM_LIMIT_TEXT}), "
            f"and no payload bucket is configured: set {BUCKET_SETTING} "
            "(bucket_name= of DynamoDBSaver) and values this large are stored in S3",
        )
        self.bucket_name = None
        self.size = size

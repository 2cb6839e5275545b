"""DynamoDB checkpoint saver with S3 offload, built for one superstep per invocation.

Data model (one table, ``pk`` = thread id, ``sk`` = namespace + separator + ...):

* checkpoint item ``{ns}\\x1f{checkpoint_id}``: the checkpoint without its values, its
  metadata, its parent id, and the values of the channels whose version changed at this
  checkpoint. A list channel that only grew stores just the appended elements, or nothing
  at all when they equal the parent checkpoint's pending writes to that channel (the usual
  case for ``operator.add`` / ``add_messages``). Versions, versions seen and metadata are
  stored as changes against the parent. It also records ``base``: the oldest sort key its
  values are rebuilt from.
* writes item ``{ns}\\x1f{checkpoint_id}\\x1f{task}\\x1f{idx}``: one ``put_writes`` call
  (``{task}``: a uuid task id in 21 characters, see ``codec.task_key``).

Values of 512 bytes and more are stored deflated when that makes them smaller
(``compress_min_bytes``).

Items sort by checkpoint id (uuid6, time ordered), so the latest checkpoint, its pending
writes and every item its values are rebuilt from form one contiguous key range ending at the
top of the namespace: one descending ``Query`` reads them. When that range holds more dead
bytes than live ones, ``put`` stores every value in full (compaction) and the range restarts.
See docs/checkpointer.md for the reasoning and the measured costs.

The class is built from one module per concern, each readable alone, each a layer on the
one before (``DynamoDBSaver`` -> ``Maintenance`` -> ``WritePath`` -> ``ReadPath`` ->
``Offload`` -> ``SaverCore``):

* ``layout.py`` — attribute names, sort key shapes, item budgets, tuning constants;
* ``codec.py`` — how a checkpoint record and a writes item are encoded;
* ``state.py`` — what is kept in memory between calls;
* ``core.py`` — settings, caches and the DynamoDB requests;
* ``offload.py`` — values in S3: putting, getting, copying and cleaning up;
* ``reads.py`` — ``get_tuple`` / ``list``: the ranged Query and rebuilding values;
* ``writes.py`` — ``put`` / ``put_writes``: deltas, references, compaction, the TTL rule;
* ``maintenance.py`` — delete, copy, prune and delete runs;
* this module — the public class: construction, ``setup()``, versions, the async API.

Example:
    ```python
    saver = DynamoDBSaver("checkpoints", bucket_name="payloads")
    saver.setup()  # creates the table / bucket when missing (local stack, tests)
    graph = builder.compile(checkpointer=saver)
    graph.invoke(inputs, {"configurable": {"thread_id": "t-1"}})
    ```
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from functions.checkpoint.layout import TTL_MARGIN_MAX_S
from functions.checkpoint.maintenance import Maintenance
from functions.resources import CHECKPOINT_TABLE


class DynamoDBSaver(Maintenance):
    """LangGraph checkpoint saver on DynamoDB, with S3 for values over the item limit.

    Args:
        table_name: the checkpoint table (key schema: ``functions.resources.CHECKPOINT_TABLE``).
        bucket_name: S3 bucket for values too large for an item (optional).
        endpoint_url: AWS endpoint override (moto locally); default: boto3's own resolution.
        region_name: AWS region; default: boto3's own resolution.
        ttl_seconds: when set, a thread stays readable for this long after its last write,
            then it is gone: DynamoDB (TTL attribute ``ttl``) and S3 (a lifecycle rule that
            ``setup()`` adds) delete its items within a margin after that (half of it, at
            most a day; see docs/checkpointer.md "Retention").
        read_items: items the first read of a checkpoint asks for; ``put`` compacts before a
            checkpoint's items outgrow it, so one read returns everything.
        compress_min_bytes: serialized values at least this long are stored deflated
            (zlib, stdlib) when that makes them smaller; ``None`` stores every value as is.
            Text, JSON and tool output usually shrink 2-4x; items are billed per KB.
        serde: LangGraph serializer (default ``JsonPlusSerializer``).
        dynamodb_client / s3_client: injected clients (tests, instrumentation).
        clock: the time source for TTLs (epoch seconds; default ``time.time``).

    Example:
        ```python
        saver = DynamoDBSaver("lambdagraph-checkpoints", endpoint_url="http://127.0.0.1:5000")
        saver.setup()
        graph = builder.compile(checkpointer=saver)
        ```
    """

    def __init__(
        self,
        table_name: str,
        *,
        bucket_name: str | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        ttl_seconds: int | None = None,
        read_items: int = 160,
        compress_min_bytes: int | None = 512,
        serde: SerializerProtocol | None = None,
        boto_config: Config | None = None,
        dynamodb_client: Any | None = None,
        s3_client: Any | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if read_items < 16:
            raise ValueError("read_items must be at least 16")
        self.table_name = table_name
        self.bucket_name = bucket_name
        self.ttl_seconds = ttl_seconds
        self._clock: Callable[[], float] = clock or time.time
        self._ttl_margin = (
            min(ttl_seconds / 2, TTL_MARGIN_MAX_S) if ttl_seconds is not None else 0.0
        )
        self.read_items = read_items
        if compress_min_bytes is not None and compress_min_bytes < 0:
            raise ValueError("compress_min_bytes must be >= 0 (or None: never compress)")
        self.compress_min_bytes = compress_min_bytes
        config = boto_config or Config(retries={"mode": "standard", "max_attempts": 5})
        self.client = dynamodb_client or boto3.client(
            "dynamodb", endpoint_url=endpoint_url, region_name=region_name, config=config
        )
        self.s3 = s3_client
        if self.s3 is None and bucket_name is not None:
            self.s3 = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=region_name, config=config
            )
        self._lock = threading.Lock()
        self._last_items = None
        self._state = OrderedDict()
        self._writes = OrderedDict()

    def setup(self) -> None:
        """Create the table (and bucket, if named) when missing, as LangGraph's savers do."""
        CHECKPOINT_TABLE.ensure_table(self.client, self.table_name)
        if self.bucket_name is not None:
            self._create_bucket()

    def _create_bucket(self) -> None:
        assert self.s3 is not None
        assert self.bucket_name is not None
        try:
            self.s3.head_bucket(Bucket=self.bucket_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
                raise
            region = self.s3.meta.region_name
            params: dict[str, Any] = {"Bucket": self.bucket_name}
            if region and region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            self.s3.create_bucket(**params)
        if self.ttl_seconds is not None:
            # S3 expires by whole days: round up, so no object expires before the items
            # that reference it.
            days = max(1, math.ceil((self.ttl_seconds + self._ttl_margin) / 86400))
            self.s3.put_bucket_lifecycle_configuration(
                Bucket=self.bucket_name,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "lambdagraph-checkpoint-ttl",
                            "Filter": {"Prefix": ""},
                            "Status": "Enabled",
                            "Expiration": {"Days": days},
                        }
                    ]
                },
            )

    def get_next_version(self, current: int | str | None, channel: None) -> int:
        """Plain increasing integers: values are keyed by checkpoint, not by version, so
        versions need no random suffix to stay unique, and short versions keep items small."""
        if current is None:
            return 1
        if isinstance(current, str):
            return int(current.split(".")[0]) + 1
        return int(current) + 1

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        iterator = self.list(config, filter=filter, before=before, limit=limit)
        done = object()
        while True:
            item = await asyncio.to_thread(next, iterator, done)
            if item is done:
                return
            yield item  # type: ignore[misc]

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> dict[str, DeltaChannelHistory]:
        return await asyncio.to_thread(
            lambda: self.get_delta_channel_history(config=config, channels=channels)
        )


__all__ = ["DynamoDBSaver"]

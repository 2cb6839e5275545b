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
import builtins
import copy
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from functions.checkpoint import codec
from functions.checkpoint.codec import (
    EMPTY,
    FROM_WRITES,
    FULL,
    S3_FULL,
    S3_TAIL,
    SAME_SEEN,
    SIDE,
    TAIL,
    WRITE_VALUE,
    CheckpointRecord,
    StoredWrite,
    Typed,
)
from functions.checkpoint.errors import (
    ITEM_LIMIT_TEXT,
    CheckpointBucketMissingError,
    CheckpointDecodeError,
    CheckpointError,
    CheckpointReadError,
    CheckpointTableMissingError,
    CheckpointTooLargeError,
    CheckpointWriteError,
)
from functions.resources import CHECKPOINT_TABLE

SEP = "\x1f"  # separates namespace, checkpoint id and task id inside a sort key
# Side items sort just below a namespace's range, so the window Query never reads them:
# ``{ns}\x1e{checkpoint_id}\x1f{channel}`` holds a graph input (see _SIDE_CHANNELS).
SIDE_SEP = "\x1e"
# A graph's input lands in __start__ at the input checkpoint and is consumed at once (the next
# checkpoint rebuilds from the input task's writes): storing it beside the namespace keeps
# every later read from carrying it.
_SIDE_CHANNELS = frozenset({"__start__"})
_SIDE_MIN_BYTES = 512
_AFTER_SEP = "\x20"
_TOP = "\U0010ffff"
_PK = CHECKPOINT_TABLE.partition_key
_SK = CHECKPOINT_TABLE.sort_key or "sk"
_TTL = CHECKPOINT_TABLE.ttl_attribute or "ttl"
_DATA = "d"
# DynamoDB's item limit is 400 KB; values move to S3 once an item's values pass this budget,
# which leaves room for keys, names, versions and metadata.
_ITEM_BUDGET = 350_000
# What an encoded item may take at most (names and values; the TTL attribute's room kept).
_ITEM_LIMIT = 400 * 1024 - 64
_BATCH = 25
_TASK_REF = 8  # characters of a task id that name it among one checkpoint's tasks
# Compact when the read window holds this much more than twice the live values.
_COMPACT_SLACK = 64 * 1024
# Store a checkpoint's record in full rather than as a diff that would stretch the read
# window back over more than this many bytes.
_DIFF_CHAIN_BYTES = 2048
# A record whose base equals its parent's stores none, except every this many records.
_BASE_EVERY = 8
# (thread, namespace) pairs whose latest state a saver keeps in memory.
_CACHED_THREADS = 256
# Items a known window may have gained since this saver last saw it (other writers' writes).
_WINDOW_SLACK = 2
# With a TTL, items are written to expire ttl_seconds + a margin after they were written,
# and put() compacts rather than rebuild from items written more than the margin ago: what
# a head is rebuilt from then lives at least ttl_seconds past the head (see _ttl_margin).
_TTL_MARGIN_MAX_S = 86400.0
# How long put() waits for a concurrent put_writes() to register (see _await_writes).
_AWAIT_WRITES_S = 0.025

_CHECKPOINT_KEYS = frozenset(
    {"v", "id", "ts", "channel_values", "channel_versions", "versions_seen", "updated_channels"}
)


def _prefix(ns: str) -> str:
    return f"{ns}{SEP}"


def _floor(sort_key_suffix: str) -> str:
    """The read floor for an item: a writes item ``cid\x1ftask\x1fidx`` becomes
    ``cid\x1f`` (every write of that checkpoint, not its checkpoint item), which is half
    as long to store and still sorts at or below the item."""
    checkpoint_id, sep, _ = sort_key_suffix.partition(SEP)
    return checkpoint_id + sep


def _item_size(thread_id: str, sort_key: str, data: bytes) -> int:
    """DynamoDB's size of one of our items (names + values), without the TTL attribute."""
    return len(_PK) + len(thread_id.encode()) + len(_SK) + len(sort_key.encode()) + 1 + len(data)


def _check_key_part(name: str, value: str) -> None:
    if SEP in value or SIDE_SEP in value:
        raise ValueError(f"{name} must not contain the characters U+001E/U+001F: {value!r}")


def _namespace_of(sort_key: str) -> str:
    return sort_key.split(SEP, 1)[0].split(SIDE_SEP, 1)[0]


def _is_side(sort_key: str) -> bool:
    return SIDE_SEP in sort_key.split(SEP, 1)[0]


@dataclass(frozen=True)
class _Target:
    """What a write path is storing, for its errors: thread, namespace and a description
    ("checkpoint 'x'", "the writes of task 't' to checkpoint 'x'")."""

    thread_id: str
    ns: str
    what: str


class _ObjectMissingError(Exception):
    """An S3 object an item references is gone (reported as the checkpoint's read error)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"S3 object {key!r} holding part of it is missing")


@dataclass
class _Resolved:
    """A checkpoint record with its parent diffs applied."""

    versions: dict[str, Any]
    seen: dict[str, dict[str, Any]]
    metadata: dict[str, Any]
    updated: list[str] | None
    record_start: str  # sort key suffix of the full record this one is a diff chain from
    # The record's own versions_seen diff (None for a full record): the next record stores
    # SAME_SEEN instead of repeating it, which is every step of a loop.
    seen_diff: dict[str, Any] | None = None


@dataclass
class _ThreadState:
    """What this saver last read or wrote for one (thread, namespace): the put() that
    follows a get_tuple() in the same invocation stores only what changed."""

    checkpoint_id: str
    base: str  # sort key suffix of the oldest item this checkpoint's values need
    values: dict[str, Typed | None]  # serialized channel values (None = empty channel)
    starts: dict[str, str]  # channel -> sort key suffix of the oldest item it is rebuilt from
    resolved: _Resolved
    window: dict[str, int]  # sort key suffix -> item size, for the items from base up
    base_age: int = 0  # records since the last one that stored its base explicitly
    # sort key suffix -> the item's ``ttl`` (epoch seconds), for window items that have one
    expires: dict[str, int] = field(default_factory=dict)


@dataclass
class _WriteBatch:
    """One put_writes call of this saver, registered before its PutItem so that a put()
    running concurrently (LangGraph saves writes and checkpoints from a thread pool) can
    wait for it instead of missing it."""

    writes: list[StoredWrite]
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class _Items:
    """Items of one (thread, namespace) read newest first, page by page, on demand."""

    def __init__(
        self,
        saver: DynamoDBSaver,
        thread_id: str,
        ns: str,
        *,
        upper: str | None = None,
        first_limit: int | None = None,
    ) -> None:
        self.saver = saver
        self.thread_id = thread_id
        self.ns = ns
        self.prefix = _prefix(ns)
        self.upper = upper if upper is not None else self.prefix + _TOP
        self.first_limit = first_limit
        self.records: dict[str, CheckpointRecord] = {}
        self.resolved: dict[str, _Resolved] = {}
        self.sizes: dict[str, int] = {}  # sort key suffix -> item size
        self.expires: dict[str, int] = {}  # sort key suffix -> ttl, for items with one
        self.writes: dict[str, list[StoredWrite]] = {}
        self.order: list[str] = []  # checkpoint ids, newest first
        self.sort_keys: list[str] = []  # every sort key read, newest first
        self._last_key: dict[str, Any] | None = None
        self._started = False
        self.exhausted = False
        self._floor: str | None = None  # lower bound of the read that exhausted the range

    @property
    def lowest(self) -> str | None:
        return self.sort_keys[-1] if self.sort_keys else None

    def load_page(self, lower: str | None = None) -> None:
        """Read the next page, optionally no lower than ``lower`` (a sort key)."""
        if self.exhausted:
            return
        low = lower if lower is not None else self.prefix
        params: dict[str, Any] = {
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#pk": _PK, "#sk": _SK},
            "ExpressionAttributeValues": {
                ":pk": {"S": self.thread_id},
                ":lo": {"S": low},
                ":hi": {"S": self.upper},
            },
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if not self._started and self.first_limit:
            params["Limit"] = self.first_limit
        if self._last_key is not None:
            params["ExclusiveStartKey"] = self._last_key
        self._started = True
        response = self.saver._query(params)
        # A checkpoint is gone once the retention after its write has passed (its ttl less
        # the margin the saver writes with). Items it is rebuilt from are used whatever their
        # own ttl: put() keeps them alive at least as long (see DynamoDBSaver._ttl_margin).
        hide_before = self.saver._clock() + self.saver._ttl_margin
        for item in response.get("Items", []):
            self._add(item, hide_before)
        self._last_key = response.get("LastEvaluatedKey")
        if self._last_key is None:
            self.exhausted = True
            self._floor = low

    def ensure_down_to(self, sort_key: str) -> None:
        """Keep reading until every item at or above ``sort_key`` is loaded."""
        while self.lowest is None or self.lowest > sort_key:
            if self.exhausted:
                if self._floor is None or self._floor <= sort_key:
                    return
                self._reopen()
            self.load_page(sort_key)

    def load_all(self) -> None:
        self.ensure_down_to(self.prefix)

    def more(self) -> bool:
        """Read the next page of older items; False when there are none."""
        if self.exhausted:
            if self._floor is None or self._floor <= self.prefix:
                return False
            self._reopen()
        self.load_page()
        return True

    def _reopen(self) -> None:
        """A read stopped at a higher floor before: carry on below the lowest item read."""
        self.exhausted = False
        self._last_key = (
            {_PK: {"S": self.thread_id}, _SK: {"S": self.lowest}}
            if self.lowest is not None
            else None
        )

    def _add(self, item: dict[str, Any], hide_before: float) -> None:
        sk: str = item[_SK]["S"]
        self.sort_keys.append(sk)
        rest = sk[len(self.prefix) :]
        data: bytes = item[_DATA]["B"]
        self.sizes[rest] = _item_size(self.thread_id, sk, data)
        expired = False
        if _TTL in item:
            self.expires[rest] = int(item[_TTL]["N"])
            expired = self.expires[rest] < hide_before
        parts = rest.split(SEP)
        checkpoint_id = parts[0]
        try:
            if len(parts) == 1:
                self.records[checkpoint_id] = CheckpointRecord.decode(data)
                if not expired:  # past its retention: not listed, still a parent to rebuild from
                    self.order.append(checkpoint_id)
            else:
                self.writes.setdefault(checkpoint_id, []).extend(
                    codec.decode_writes(parts[1], data, rest)
                )
        except Exception as exc:
            raise CheckpointDecodeError(self.thread_id, self.ns, checkpoint_id, repr(exc)) from exc

    def latest(self) -> str | None:
        while not self.order and not self.exhausted:
            self.load_page()
        return self.order[0] if self.order else None

    def record(self, checkpoint_id: str) -> CheckpointRecord | None:
        if checkpoint_id not in self.records:
            self.ensure_down_to(self.prefix + checkpoint_id)
        return self.records.get(checkpoint_id)


class DynamoDBSaver(BaseCheckpointSaver[int]):
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
            min(ttl_seconds / 2, _TTL_MARGIN_MAX_S) if ttl_seconds is not None else 0.0
        )
        self.read_items = read_items
        if compress_min_bytes is not None and compress_min_bytes < 0:
            raise ValueError("compress_min_bytes must be >= 0 (or None: never compress)")
        self.compress_min_bytes = compress_min_bytes
        config = boto_config or Config(retries={"mode": "standard", "max_attempts": 5})
        self.client: Any = dynamodb_client or boto3.client(
            "dynamodb", endpoint_url=endpoint_url, region_name=region_name, config=config
        )
        self.s3: Any = s3_client
        if self.s3 is None and bucket_name is not None:
            self.s3 = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=region_name, config=config
            )
        self._lock = threading.Lock()
        self._last_items: tuple[str, _Items] | None = None
        # Bounded (least recently used out): one saver may serve many threads in a process.
        self._state: OrderedDict[tuple[str, str], _ThreadState] = OrderedDict()
        # (thread, ns) -> checkpoint id -> write batches, for the few newest checkpoints.
        self._writes: OrderedDict[tuple[str, str], OrderedDict[str, list[_WriteBatch]]] = (
            OrderedDict()
        )

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Create the table (and bucket, if named) when missing, as LangGraph's savers do."""
        try:
            self.client.describe_table(TableName=self.table_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            self._create_table()
        if self.bucket_name is not None:
            self._create_bucket()

    def _create_table(self) -> None:
        try:
            self.client.create_table(**CHECKPOINT_TABLE.create_table_request(self.table_name))
        except ClientError as exc:
            # Another process created it between our describe and create: that is fine.
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        self.client.get_waiter("table_exists").wait(TableName=self.table_name)
        self.client.update_time_to_live(
            TableName=self.table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": _TTL},
        )

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

    # --------------------------------------------------------------- AWS calls

    def _wrap(self, exc: ClientError) -> Exception:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return CheckpointTableMissingError(self.table_name)
        return exc

    def _query(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client.query(TableName=self.table_name, **params)
        except ClientError as exc:
            raise self._wrap(exc) from exc

    def _put_item(self, item: dict[str, Any], *, only_new: bool = False) -> bool:
        """PutItem; with ``only_new``, False when an item with that key already exists."""
        params: dict[str, Any] = {"TableName": self.table_name, "Item": item}
        if only_new:
            params["ConditionExpression"] = "attribute_not_exists(#sk)"
            params["ExpressionAttributeNames"] = {"#sk": _SK}
        try:
            self.client.put_item(**params)
        except ClientError as exc:
            if only_new and exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise self._wrap(exc) from exc
        return True

    def _batch_write(self, requests: builtins.list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), _BATCH):
            pending: dict[str, Any] = {self.table_name: requests[start : start + _BATCH]}
            delay = 0.05
            while pending:
                try:
                    response = self.client.batch_write_item(RequestItems=pending)
                except ClientError as exc:
                    raise self._wrap(exc) from exc
                pending = response.get("UnprocessedItems") or {}
                if pending:
                    # Throttled: back off as the BatchWriteItem documentation asks.
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)

    def _s3_put(self, target: _Target, part: str, key: str, data: bytes) -> None:
        """Store ``part`` (what the value is, for errors) of ``target`` in S3."""
        if self.s3 is None or self.bucket_name is None:
            raise CheckpointTooLargeError(target.thread_id, target.ns, target.what, part, len(data))
        try:
            self.s3.put_object(Bucket=self.bucket_name, Key=key, Body=data)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchBucket":
                raise CheckpointWriteError(
                    target.thread_id,
                    target.ns,
                    target.what,
                    f"{part} goes to S3, and {CheckpointBucketMissingError(self.bucket_name)}",
                ) from exc
            raise

    def _s3_get(self, key: str) -> bytes:
        if self.s3 is None or self.bucket_name is None:
            raise CheckpointBucketMissingError(None, f"reading {key}")
        try:
            body = self.s3.get_object(Bucket=self.bucket_name, Key=key)["Body"]
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "NoSuchBucket":
                raise CheckpointBucketMissingError(self.bucket_name) from exc
            if code in ("NoSuchKey", "404"):
                raise _ObjectMissingError(key) from exc
            raise
        data: bytes = body.read()
        return data

    def _s3_delete_prefix(self, prefix: str, keep: set[str] | None = None) -> None:
        if self.s3 is None or self.bucket_name is None:
            return
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=prefix):
            keys = [o["Key"] for o in page.get("Contents", []) if o["Key"] not in (keep or set())]
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                self.s3.delete_objects(
                    Bucket=self.bucket_name,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )

    def _s3_copy(self, source: str, target: str) -> None:
        assert self.s3 is not None
        self.s3.copy_object(
            Bucket=self.bucket_name,
            Key=target,
            CopySource={"Bucket": self.bucket_name, "Key": source},
        )

    def _expiry(self, now: float) -> int | None:
        """The ``ttl`` of an item written at ``now``: the retention plus the margin within
        which later checkpoints may still be rebuilt from it (see put())."""
        if self.ttl_seconds is None:
            return None
        return math.ceil(now + self.ttl_seconds + self._ttl_margin)

    @staticmethod
    def _ttl_attr(expiry: int | None) -> dict[str, Any]:
        return {} if expiry is None else {_TTL: {"N": str(expiry)}}

    # ------------------------------------------------------------ key helpers

    @staticmethod
    def _s3_prefix(thread_id: str) -> str:
        return f"{quote(thread_id, safe='')}/"

    def _s3_key(self, thread_id: str, ns: str, checkpoint_id: str, name: str) -> str:
        return (
            f"{self._s3_prefix(thread_id)}{quote(ns, safe='')}/{checkpoint_id}/"
            f"{quote(name, safe='')}"
        )

    # ------------------------------------------------------------- reading

    def _value(
        self, items: _Items, checkpoint_id: str, channel: str
    ) -> tuple[Typed | None, str | None]:
        """Serialized value of ``channel`` at a checkpoint, and the oldest checkpoint id its
        rebuild used. Walks the parent chain back to the checkpoint that stored it in full."""
        steps: builtins.list[tuple[str, builtins.list[Any]]] = []
        current: str | None = checkpoint_id
        while current is not None:
            record = items.record(current)
            if record is None:
                if not steps and current == checkpoint_id:
                    return None, None
                raise CheckpointReadError(
                    items.thread_id,
                    items.ns,
                    checkpoint_id,
                    f"checkpoint {current!r} holding part of channel {channel!r} is missing",
                )
            entry = record.blobs.get(channel)
            if entry is None:
                current = record.parent
                continue
            kind = entry[0]
            if kind in (TAIL, S3_TAIL, FROM_WRITES):
                steps.append((current, entry))
                current = record.parent
                continue
            start = current
            if kind == WRITE_VALUE:
                parent = record.parent
                writes = self._referenced(items, parent, channel, entry[1:3])
                if len(writes) != 1 or parent is None:
                    raise CheckpointReadError(
                        items.thread_id, items.ns, current, f"write of {channel!r} is missing"
                    )
                base_value = self._write_value(writes[0])
                if not steps:
                    return base_value, writes[0].sort_key
                return (
                    self._apply_deltas(items, checkpoint_id, channel, base_value, steps),
                    writes[0].sort_key,
                )
            if kind == EMPTY:
                if steps:
                    raise CheckpointDecodeError(
                        items.thread_id, items.ns, checkpoint_id, f"delta of empty {channel!r}"
                    )
                return None, None
            if kind == FULL:
                base: Typed = (codec.type_name(entry[1]), entry[2])
            elif kind == S3_FULL:
                base = (codec.type_name(entry[1]), self._s3_get(entry[2]))
            elif kind == SIDE:
                base = codec.load(entry[1], self._side_get(items, current, channel))
            else:
                raise CheckpointDecodeError(
                    items.thread_id, items.ns, checkpoint_id, f"unknown value kind {kind!r}"
                )
            if not steps:
                return base, start
            return self._apply_deltas(items, checkpoint_id, channel, base, steps), start
        return None, None

    def _side_get(self, items: _Items, checkpoint_id: str, channel: str) -> bytes:
        key = {
            _PK: {"S": items.thread_id},
            _SK: {"S": f"{items.ns}{SIDE_SEP}{checkpoint_id}{SEP}{channel}"},
        }
        try:
            item = self.client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True)
        except ClientError as exc:
            raise self._wrap(exc) from exc
        if "Item" not in item:
            raise CheckpointReadError(
                items.thread_id, items.ns, checkpoint_id, f"stored input {channel!r} is missing"
            )
        data: bytes = item["Item"][_DATA]["B"]
        return data

    def _apply_deltas(
        self,
        items: _Items,
        checkpoint_id: str,
        channel: str,
        base: Typed,
        steps: builtins.list[tuple[str, builtins.list[Any]]],
    ) -> Typed:
        split = codec.split_array(base[1]) if base[0] == "msgpack" else None
        if split is None:
            raise CheckpointDecodeError(
                items.thread_id, items.ns, checkpoint_id, f"{channel!r} delta on a non-list"
            )
        count, body = split
        parts = [body]
        for at, entry in reversed(steps):
            if entry[0] in (TAIL, S3_TAIL):
                count += entry[1]
                parts.append(entry[2] if entry[0] == TAIL else self._s3_get(entry[2]))
                continue
            record = items.records[at]
            if record.parent is None:
                raise CheckpointDecodeError(
                    items.thread_id, items.ns, at, "writes delta without a parent"
                )
            added = 0
            for write in self._referenced(items, record.parent, channel, entry[2]):
                typed = self._write_value(write)
                elements = codec.as_elements(typed)
                if elements is None:
                    raise CheckpointDecodeError(
                        items.thread_id, items.ns, at, f"{channel!r} write is not msgpack"
                    )
                added += elements[0]
                parts.append(elements[1])
            if added != entry[1]:
                raise CheckpointDecodeError(
                    items.thread_id,
                    items.ns,
                    at,
                    f"{channel!r} expected {entry[1]} appended elements, writes hold {added}",
                )
            count += added
        return "msgpack", codec.array_header(count) + b"".join(parts)

    def _base(self, items: _Items, checkpoint_id: str) -> str:
        """A record's base; a diff record with the same base as its parent stores none."""
        return self._base_age(items, checkpoint_id)[0]

    def _base_age(self, items: _Items, checkpoint_id: str) -> tuple[str, int]:
        """A record's base and how many parents were walked to find it."""
        current: str | None = checkpoint_id
        age = 0
        while current is not None:
            record = items.record(current)
            if record is None:
                break
            if record.base is not None:
                return record.base, age
            current = record.parent
            age += 1
        raise CheckpointReadError(
            items.thread_id, items.ns, checkpoint_id, f"no base found (reached {current!r})"
        )

    def _resolve(self, items: _Items, checkpoint_id: str) -> _Resolved:
        """Apply a record's chain of parent diffs (all within its read window)."""
        chain: builtins.list[tuple[str, CheckpointRecord]] = []
        current: str | None = checkpoint_id
        resolved: _Resolved | None = None
        while resolved is None:
            if current is None:
                raise CheckpointDecodeError(
                    items.thread_id, items.ns, checkpoint_id, "diff record without a parent"
                )
            if current in items.resolved:
                resolved = items.resolved[current]
                break
            record = items.record(current)
            if record is None:
                raise CheckpointReadError(
                    items.thread_id, items.ns, checkpoint_id, f"ancestor {current!r} is missing"
                )
            if not record.diff:
                if not isinstance(record.channel_versions, dict):
                    raise CheckpointDecodeError(
                        items.thread_id, items.ns, current, "full record without versions"
                    )
                if not isinstance(record.versions_seen, dict) or record.metadata is None:
                    raise CheckpointDecodeError(
                        items.thread_id, items.ns, current, "full record stored as a diff"
                    )
                resolved = _Resolved(
                    versions=dict(record.channel_versions),
                    seen={k: dict(v) for k, v in record.versions_seen.items()},
                    metadata=self.serde.loads_typed(record.metadata),
                    updated=self._updated(record),
                    record_start=current,
                )
                items.resolved[current] = resolved
                break
            chain.append((current, record))
            current = record.parent
        for cid, record in reversed(chain):
            versions = dict(resolved.versions)
            changed = record.channel_versions
            if not isinstance(changed, dict):
                # Every channel with a blob moved to this one version (see put()).
                changed = dict.fromkeys(record.blobs, changed)
            for channel, version in changed.items():
                if version is None:
                    versions.pop(channel, None)
                else:
                    versions[channel] = version
            seen = dict(resolved.seen)
            seen_diff = record.versions_seen
            if not isinstance(seen_diff, dict):  # SAME_SEEN
                seen_diff = resolved.seen_diff or {}
            for node, mapping in seen_diff.items():
                if mapping is None:
                    seen.pop(node, None)
                elif mapping == 0:
                    seen[node] = dict(resolved.versions)
                elif mapping == 1:
                    seen[node] = {ch: resolved.versions.get(ch) for ch in resolved.seen[node]}
                else:
                    seen[node] = dict(mapping)
            if record.metadata is None:  # NEXT_STEP: only the step moved on, by one
                metadata = {**resolved.metadata, "step": resolved.metadata["step"] + 1}
            else:
                metadata = {**resolved.metadata, **self.serde.loads_typed(record.metadata)}
            resolved = _Resolved(
                versions=versions,
                seen=seen,
                metadata=metadata,
                updated=self._updated(record),
                record_start=resolved.record_start,
                seen_diff=seen_diff,
            )
            items.resolved[cid] = resolved
        return resolved

    @staticmethod
    def _updated(record: CheckpointRecord) -> builtins.list[str] | None:
        if record.updated_channels == 1:
            return sorted(record.blobs)
        return record.updated_channels  # type: ignore[return-value]

    def _referenced(
        self, items: _Items, checkpoint_id: str | None, channel: str, refs: builtins.list[Any]
    ) -> builtins.list[StoredWrite]:
        """The writes to ``channel`` at a checkpoint named by (task id prefix, idx) pairs."""
        if checkpoint_id is None:
            return []
        wanted = {(refs[i], refs[i + 1]) for i in range(0, len(refs), 2)}
        return [
            w
            for w in self._sorted_writes(items.writes.get(checkpoint_id, []))
            if w.channel == channel and (w.task_id[:_TASK_REF], w.idx) in wanted
        ]

    @staticmethod
    def _sorted_writes(writes: builtins.list[StoredWrite]) -> builtins.list[StoredWrite]:
        return sorted(writes, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))

    def _write_value(self, write: StoredWrite) -> Typed:
        if write.data is None:
            assert write.s3_key is not None
            # Kept: the next put() compares appended elements with it (see _delta_entry).
            write.data = self._s3_get(write.s3_key)
        return write.type_, write.data

    def _tuple(
        self, items: _Items, checkpoint_id: str, *, remember: bool
    ) -> CheckpointTuple | None:
        record = items.record(checkpoint_id)
        if record is None:
            return None
        base, base_age = self._base_age(items, checkpoint_id)
        items.ensure_down_to(items.prefix + base)
        values: dict[str, Typed | None] = {}
        starts: dict[str, str] = {}
        try:
            resolved = self._resolve(items, checkpoint_id)
            for channel in resolved.versions:
                typed, start = self._value(items, checkpoint_id, channel)
                values[channel] = typed
                if start is not None:
                    starts[channel] = start
            channel_values = {
                ch: self.serde.loads_typed(typed)
                for ch, typed in values.items()
                if typed is not None
            }
            writes = self._sorted_writes(items.writes.get(checkpoint_id, []))
            pending: builtins.list[PendingWrite] = [
                (w.task_id, w.channel, self.serde.loads_typed(self._write_value(w))) for w in writes
            ]
            extra = self.serde.loads_typed(record.extra) if record.extra is not None else {}
        except (CheckpointError, ClientError, BotoCoreError):
            raise  # already says what failed; AWS errors stay retryable as they are
        except _ObjectMissingError as exc:
            raise CheckpointReadError(items.thread_id, items.ns, checkpoint_id, str(exc)) from exc
        except Exception as exc:
            raise CheckpointDecodeError(
                items.thread_id, items.ns, checkpoint_id, repr(exc)
            ) from exc
        checkpoint: dict[str, Any] = {
            **extra,
            "v": record.v,
            "id": checkpoint_id,
            "ts": record.ts,
            "channel_values": channel_values,
            "channel_versions": dict(resolved.versions),
            "versions_seen": {k: dict(v) for k, v in resolved.seen.items()},
            "updated_channels": list(resolved.updated) if resolved.updated is not None else None,
        }
        if remember:
            window = {sk: size for sk, size in items.sizes.items() if sk >= base}
            expires = {sk: ttl for sk, ttl in items.expires.items() if sk >= base}
            state = _ThreadState(
                checkpoint_id=checkpoint_id,
                base=base,
                values=values,
                starts=starts,
                resolved=resolved,
                window=window,
                base_age=base_age,
                expires=expires,
            )
            batch = _WriteBatch(writes=list(writes), ok=True)
            batch.done.set()
            with self._lock:
                self._remember(items.thread_id, items.ns, state)
                self._writes[(items.thread_id, items.ns)] = OrderedDict({checkpoint_id: [batch]})
                self._writes.move_to_end((items.thread_id, items.ns))
                self._trim()
        config: RunnableConfig = {
            "configurable": {
                "thread_id": items.thread_id,
                "checkpoint_ns": items.ns,
                "checkpoint_id": checkpoint_id,
            }
        }
        parent_config: RunnableConfig | None = None
        if record.parent is not None:
            parent_config = {
                "configurable": {
                    "thread_id": items.thread_id,
                    "checkpoint_ns": items.ns,
                    "checkpoint_id": record.parent,
                }
            }
        return CheckpointTuple(
            config=config,
            checkpoint=checkpoint,  # type: ignore[arg-type]
            # A deep copy: the resolved metadata stays cached (put() diffs against it), and
            # callers may mutate what they get (nested values such as ``parents`` included).
            metadata=copy.deepcopy(resolved.metadata),  # type: ignore[arg-type]
            parent_config=parent_config,
            pending_writes=pending,
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (or the thread's latest), with its pending writes.

        One ``Query`` in the common case: the newest items of the namespace down to the
        oldest one the checkpoint's values are rebuilt from.
        """
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        prefix = _prefix(ns)
        upper = prefix + checkpoint_id + _AFTER_SEP if checkpoint_id else None
        limit = self.read_items
        with self._lock:
            state = self._state.get((thread_id, ns))
            if state is not None and checkpoint_id in (None, state.checkpoint_id):
                # This saver wrote or read the thread last: it knows how many items the
                # window holds, so the read need not over-read below it.
                limit = min(limit, len(state.window) + _WINDOW_SLACK)
        items = _Items(self, thread_id, ns, upper=upper, first_limit=limit)
        target = items.latest()
        if target is None or (checkpoint_id is not None and target != checkpoint_id):
            return None
        result = self._tuple(items, target, remember=True)
        with self._lock:
            # LangGraph asks for DeltaChannel history right after loading a checkpoint:
            # serve it from the items this read already holds.
            self._last_items = (target, items)
        return result

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, filtered by metadata, ``before`` a checkpoint, up to ``limit``."""
        if limit is not None and limit <= 0:
            return
        if config is None:
            groups = self._scan_groups()
        else:
            configurable = config["configurable"]
            thread_id = configurable["thread_id"]
            ns = configurable.get("checkpoint_ns")
            namespaces = [ns] if ns is not None else self._namespaces(thread_id)
            groups = [(thread_id, n) for n in namespaces]
        wanted_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        remaining = limit
        for thread_id, ns in groups:
            prefix = _prefix(ns)
            upper = prefix + before_id if before_id else None
            items = _Items(self, thread_id, ns, upper=upper)
            index = 0
            while True:
                while index >= len(items.order) and items.more():
                    pass
                if index >= len(items.order):
                    break
                checkpoint_id = items.order[index]
                index += 1
                if before_id is not None and checkpoint_id >= before_id:
                    continue
                if wanted_id is not None and checkpoint_id != wanted_id:
                    continue
                if filter:
                    items.ensure_down_to(items.prefix + self._base(items, checkpoint_id))
                    metadata = self._resolve(items, checkpoint_id).metadata
                    if not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                result = self._tuple(items, checkpoint_id, remember=False)
                if result is None:
                    continue
                yield result
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return

    def _namespaces(self, thread_id: str) -> builtins.list[str]:
        namespaces: set[str] = set()
        for item in self._all_items(thread_id, projection=True):
            namespaces.add(_namespace_of(item[_SK]["S"]))
        # Root first, then children, as a stable order.
        return sorted(namespaces)

    def _all_items(
        self, thread_id: str, *, projection: bool = False
    ) -> builtins.list[dict[str, Any]]:
        params: dict[str, Any] = {
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": _PK},
            "ExpressionAttributeValues": {":pk": {"S": thread_id}},
            "ConsistentRead": True,
        }
        if projection:
            params["ProjectionExpression"] = "#pk, #sk"
            params["ExpressionAttributeNames"]["#sk"] = _SK
        result: builtins.list[dict[str, Any]] = []
        while True:
            response = self._query(params)
            result.extend(response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if last is None:
                return result
            params["ExclusiveStartKey"] = last

    def _scan_groups(self) -> builtins.list[tuple[str, str]]:
        groups: set[tuple[str, str]] = set()
        params: dict[str, Any] = {
            "ProjectionExpression": "#pk, #sk",
            "ExpressionAttributeNames": {"#pk": _PK, "#sk": _SK},
        }
        while True:
            try:
                response = self.client.scan(TableName=self.table_name, **params)
            except ClientError as exc:
                raise self._wrap(exc) from exc
            for item in response.get("Items", []):
                groups.add((item[_PK]["S"], _namespace_of(item[_SK]["S"])))
            last = response.get("LastEvaluatedKey")
            if last is None:
                return sorted(groups)
            params["ExclusiveStartKey"] = last

    # ------------------------------------------------------------- writing

    def _offload(
        self,
        target: _Target,
        checkpoint_id: str,
        blobs: dict[str, builtins.list[Any]],
        budget: int = _ITEM_BUDGET,
    ) -> bool:
        """Move the largest inline values (full values and appended tails) to S3 until the
        rest take at most ``budget`` bytes; True if any moved."""
        sizes = {ch: len(e[2]) for ch, e in blobs.items() if e[0] in (FULL, TAIL)}
        total = sum(sizes.values())
        moved = False
        for channel, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
            if total <= budget:
                break
            entry = blobs[channel]
            if entry[0] == FULL:
                key = self._s3_key(target.thread_id, target.ns, checkpoint_id, f"c{SEP}{channel}")
                self._s3_put(target, f"the value of channel {channel!r}", key, entry[2])
                blobs[channel] = [S3_FULL, entry[1], key]
            else:
                key = self._s3_key(target.thread_id, target.ns, checkpoint_id, f"t{SEP}{channel}")
                self._s3_put(target, f"what was appended to channel {channel!r}", key, entry[2])
                blobs[channel] = [S3_TAIL, entry[1], key]
            total -= size
            moved = True
        return moved

    def _encode_record(
        self, target: _Target, checkpoint_id: str, record: CheckpointRecord, sort_key: str
    ) -> bytes:
        """The record's item data, its largest values moved to S3 until the item fits."""
        self._offload(target, checkpoint_id, record.blobs)
        while True:
            data = record.encode(self.compress_min_bytes)
            size = _item_size(target.thread_id, sort_key, data)
            if size <= _ITEM_LIMIT:
                return data
            # Versions, metadata or references fill the item: move every value out too.
            if not self._offload(target, checkpoint_id, record.blobs, 0):
                raise CheckpointWriteError(
                    target.thread_id,
                    target.ns,
                    target.what,
                    f"its item would be {size:,} bytes with every value in S3, more than "
                    f"DynamoDB holds ({ITEM_LIMIT_TEXT}): its metadata or channel versions "
                    "are too large",
                )

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint: one PutItem holding only what changed since its parent."""
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        parent: str | None = configurable.get("checkpoint_id")
        checkpoint_id = checkpoint["id"]
        _check_key_part("checkpoint_ns", ns)
        _check_key_part("checkpoint_id", checkpoint_id)
        values = checkpoint["channel_values"]
        versions = dict(checkpoint["channel_versions"])
        seen = {k: dict(v) for k, v in checkpoint["versions_seen"].items()}
        # Deep copies: these are cached as the thread's latest state and diffed against at the
        # next put(), while LangGraph (another thread, even) keeps using its own objects.
        md = copy.deepcopy(dict(get_checkpoint_metadata(config, metadata)))
        updated = checkpoint.get("updated_channels")
        # Taken before anything is stored, so nothing written for this checkpoint (its S3
        # objects included) was created before the time its expiry counts from.
        now = self._clock()
        expiry = self._expiry(now)

        with self._lock:
            state = self._state.get((thread_id, ns))
            if state is not None:
                # put_writes() may add to the window concurrently: work on a copy.
                state = replace(state, window=dict(state.window), expires=dict(state.expires))
        if state is not None and state.checkpoint_id != parent:
            state = None  # not the checkpoint this saver last saw: store everything
        if (
            state is None
            and parent is not None
            and any(ch not in values and ch not in new_versions for ch in versions)
        ):
            # A fork, update_state or a put without a read: channels that kept the parent's
            # version without a value here hold the parent's value, so read the parent once.
            state = self._parent_state(thread_id, ns, parent)

        planned = self._incremental(
            thread_id, ns, state, parent, checkpoint_id, values, versions, new_versions, md
        )
        if planned is None:
            blobs, new_values, starts = self._full_values(
                checkpoint_id, values, versions, new_versions, state
            )
            value_base = checkpoint_id
        else:
            blobs, new_values, starts, value_base = planned

        diff = None
        if planned is not None and state is not None:
            diff = self._record_diff(state.resolved, versions, seen, md)
            if diff is not None:
                # A diff chains this record to the parent's full record: worth it only while
                # that keeps the read window about where the values already start.
                start = state.resolved.record_start
                between = sum(s for sk, s in state.window.items() if start <= sk < value_base)
                if between > _DIFF_CHAIN_BYTES:
                    diff = None
        record_start = state.resolved.record_start if diff is not None and state else checkpoint_id
        base = _floor(min(value_base, record_start, checkpoint_id))
        if self._expiring(state, base, now):
            # What this would be rebuilt from expires before this checkpoint's retention
            # ends: store it in full, so it relies on nothing older (see _expiring).
            blobs, new_values, starts = self._full_values(
                checkpoint_id, values, versions, new_versions, state
            )
            diff, base, record_start, planned = None, checkpoint_id, checkpoint_id, None

        side: dict[str, bytes] = {}
        for channel in _SIDE_CHANNELS:
            entry = blobs.get(channel)
            if entry and entry[0] == FULL and _SIDE_MIN_BYTES <= len(entry[2]) <= _ITEM_BUDGET:
                code, side[channel] = codec.store(entry[1], entry[2], self.compress_min_bytes)
                blobs[channel] = [SIDE, code]
        extra = {k: v for k, v in checkpoint.items() if k not in _CHECKPOINT_KEYS and v}
        # Unchanged from the parent's (the usual step): readers find it by walking parents,
        # which the read window holds anyway.
        # Every _BASE_EVERY records it is stored anyway, so that a cold reader finds it among
        # the first page's newest items instead of walking parents one Query at a time.
        inherit = state is not None and base == state.base and state.base_age < _BASE_EVERY
        stored_base: str | None = None if inherit else base
        seen_diff: dict[str, Any] | None = None
        stored_seen: dict[str, Any] | int
        stored_md: Typed | None
        if diff is not None and state is not None:
            versions_field, seen_diff, md_field = diff
            # A loop repeats its versions_seen diff and only moves the step: say so in a byte.
            stored_seen = SAME_SEEN if seen_diff == state.resolved.seen_diff else seen_diff
            prev_step = state.resolved.metadata.get("step")
            next_step = type(prev_step) is int and md_field == {"step": prev_step + 1}
            stored_md = None if next_step else self.serde.dumps_typed(md_field)
            changed_to = set(versions_field.values())
            if (
                len(changed_to) == 1
                and None not in changed_to
                and set(versions_field) == set(blobs)
            ):
                versions_field = changed_to.pop()  # one version for every changed channel
        else:
            versions_field, stored_seen, stored_md = versions, seen, self.serde.dumps_typed(md)
        record = CheckpointRecord(
            parent=parent,
            ts=checkpoint["ts"],
            v=checkpoint["v"],
            channel_versions=versions_field,
            versions_seen=stored_seen,
            updated_channels=1
            if updated is not None and sorted(updated) == sorted(blobs)
            else updated,
            metadata=stored_md,
            base=stored_base,
            blobs=blobs,
            extra=self.serde.dumps_typed(extra) if extra else None,
            diff=diff is not None,
        )
        sort_key = _prefix(ns) + checkpoint_id
        target = _Target(thread_id, ns, f"checkpoint {checkpoint_id!r}")
        data = self._encode_record(target, checkpoint_id, record, sort_key)
        item = {
            _PK: {"S": thread_id},
            _SK: {"S": sort_key},
            _DATA: {"B": data},
            **self._ttl_attr(expiry),
        }
        if side:
            # One request still: the checkpoint and its side items in one batch.
            side_items = [
                {
                    _PK: {"S": thread_id},
                    _SK: {"S": f"{ns}{SIDE_SEP}{checkpoint_id}{SEP}{channel}"},
                    _DATA: {"B": value},
                    **self._ttl_attr(expiry),
                }
                for channel, value in side.items()
            ]
            self._batch_write([{"PutRequest": {"Item": i}} for i in [*side_items, item]])
        else:
            self._put_item(item)
        window: dict[str, int] = {}
        expires: dict[str, int] = {}
        if planned is not None and state is not None:
            window = {sk: size for sk, size in state.window.items() if sk >= base}
            expires = {sk: ttl for sk, ttl in state.expires.items() if sk >= base}
        window[checkpoint_id] = _item_size(thread_id, sort_key, data)
        if expiry is not None:
            expires[checkpoint_id] = expiry
        resolved = _Resolved(
            versions=versions,
            seen=seen,
            metadata=md,
            updated=list(updated) if updated is not None else None,
            record_start=record_start,
            seen_diff=seen_diff,
        )
        with self._lock:
            current = self._state.get((thread_id, ns))
            if current is not None:
                # Writes to the new checkpoint that landed while it was being stored.
                window.update(
                    {sk: size for sk, size in current.window.items() if sk > checkpoint_id}
                )
                expires.update(
                    {sk: ttl for sk, ttl in current.expires.items() if sk > checkpoint_id}
                )
            self._remember(
                thread_id,
                ns,
                _ThreadState(
                    checkpoint_id=checkpoint_id,
                    base=base,
                    values=new_values,
                    starts=starts,
                    resolved=resolved,
                    window=window,
                    base_age=state.base_age + 1 if inherit and state is not None else 0,
                    expires=expires,
                ),
            )
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint_id,
            }
        }

    def _parent_state(self, thread_id: str, ns: str, parent: str) -> _ThreadState | None:
        self.get_tuple(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent}}
        )
        with self._lock:
            state = self._state.get((thread_id, ns))
            if state is None or state.checkpoint_id != parent:
                return None
            return replace(state, window=dict(state.window), expires=dict(state.expires))

    def _full_values(
        self,
        checkpoint_id: str,
        values: dict[str, Any],
        versions: dict[str, Any],
        new_versions: ChannelVersions,
        state: _ThreadState | None,
    ) -> tuple[dict[str, builtins.list[Any]], dict[str, Typed | None], dict[str, str]]:
        """Every channel's value in full: the checkpoint depends on no other item. A channel
        that kept the parent's version without a value here (a DeltaChannel between
        snapshots) holds the parent's value (``state``), as in LangGraph's own savers."""
        blobs: dict[str, builtins.list[Any]] = {}
        new_values: dict[str, Typed | None] = {}
        starts: dict[str, str] = {}
        for channel in versions:
            inherited = None
            if channel not in values and channel not in new_versions and state is not None:
                inherited = state.values.get(channel)
            if channel in values or inherited is not None:
                typed = inherited or self.serde.dumps_typed(values[channel])
                new_values[channel] = typed
                blobs[channel] = [FULL, codec.type_code(typed[0]), typed[1]]
                starts[channel] = checkpoint_id
            else:
                blobs[channel] = [EMPTY]
                new_values[channel] = None
        return blobs, new_values, starts

    def _incremental(
        self,
        thread_id: str,
        ns: str,
        state: _ThreadState | None,
        parent: str | None,
        checkpoint_id: str,
        values: dict[str, Any],
        versions: dict[str, Any],
        new_versions: ChannelVersions,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[dict[str, builtins.list[Any]], dict[str, Typed | None], dict[str, str], str] | None:
        """Only the channels whose version changed, as references or appended tails where
        possible; None when a full checkpoint is due (no parent known, or compaction)."""
        if state is None or parent is None:
            return None
        ns_writes = self._saved_writes(thread_id, ns, parent)
        grew = [
            ch
            for ch in new_versions
            if isinstance(values.get(ch), list) and state.values.get(ch) is not None
        ]
        if not ns_writes and grew and self._await_writes(thread_id, ns, parent):
            ns_writes = self._saved_writes(thread_id, ns, parent)
        blobs: dict[str, builtins.list[Any]] = {}
        new_values: dict[str, Typed | None] = {}
        starts: dict[str, str] = {}
        for channel in versions:
            if channel in new_versions:
                continue
            if channel in state.values:
                new_values[channel] = state.values[channel]
                if channel in state.starts:
                    starts[channel] = state.starts[channel]
            elif channel in values:
                typed = self.serde.dumps_typed(values[channel])
                new_values[channel] = typed
                blobs[channel] = [FULL, codec.type_code(typed[0]), typed[1]]
                starts[channel] = checkpoint_id
        delta_channels = (metadata or {}).get("counters_since_delta_snapshot") or {}
        for channel in new_versions:
            if channel not in values:
                blobs[channel] = [EMPTY]
                new_values[channel] = None
                if channel in delta_channels and channel in state.starts:
                    # A DeltaChannel between snapshots: LangGraph rebuilds it from the writes
                    # since its last snapshot, so keep those in the read window.
                    starts[channel] = state.starts[channel]
                continue
            typed = self.serde.dumps_typed(values[channel])
            new_values[channel] = typed
            written = self._written_value(typed, channel, ns_writes)
            if written is not None:
                blobs[channel], starts[channel] = written
                continue
            entry = self._delta_entry(state.values.get(channel), typed, channel, ns_writes)
            if entry is not None and channel in state.starts:
                blobs[channel] = entry
                starts[channel] = state.starts[channel]
                continue
            blobs[channel] = [FULL, codec.type_code(typed[0]), typed[1]]
            starts[channel] = checkpoint_id
        value_base = min([checkpoint_id, *starts.values()])
        live = sum(len(t[1]) for t in new_values.values() if t is not None)
        window_bytes = sum(size for sk, size in state.window.items() if sk >= value_base)
        if window_bytes > 2 * live + _COMPACT_SLACK:
            # More dead bytes than live ones in the read window: compact.
            return None
        return blobs, new_values, starts, value_base

    @staticmethod
    def _record_diff(
        prev: _Resolved,
        versions: dict[str, Any],
        seen: dict[str, dict[str, Any]],
        md: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
        """The record's versions, versions seen and metadata as changes against the
        parent's; None when metadata lost a key (a full record says that simply)."""
        if any(key not in md for key in prev.metadata):
            return None
        versions_diff: dict[str, Any] = {
            ch: v for ch, v in versions.items() if prev.versions.get(ch) != v
        }
        versions_diff.update({ch: None for ch in prev.versions if ch not in versions})
        seen_diff: dict[str, Any] = {}
        for node, mapping in seen.items():
            before = prev.seen.get(node)
            if before == mapping:
                continue
            if mapping == prev.versions:
                seen_diff[node] = 0
            elif before is not None and mapping == {ch: prev.versions.get(ch) for ch in before}:
                seen_diff[node] = 1  # the same channels, seen at the parent's versions
            else:
                seen_diff[node] = mapping
        seen_diff.update({node: None for node in prev.seen if node not in seen})
        md_diff = {k: v for k, v in md.items() if k not in prev.metadata or prev.metadata[k] != v}
        return versions_diff, seen_diff, md_diff

    def _expiring(self, state: _ThreadState | None, base: str, now: float) -> bool:
        """With a TTL: would this checkpoint be rebuilt from an item that expires before the
        checkpoint's own retention ends (``now + ttl_seconds``)? Items are written to live
        the retention plus a margin, so this is "an item written more than the margin ago"
        (or one written under a shorter TTL); the checkpoint is then stored in full. After a
        thread's last write, everything its head needs outlives the head's retention."""
        if self.ttl_seconds is None or state is None:
            return False
        readable_until = now + self.ttl_seconds
        return any(ttl < readable_until for sk, ttl in state.expires.items() if sk >= base)

    @staticmethod
    def _delta_entry(
        old: Typed | None, new: Typed, channel: str, parent_writes: builtins.list[StoredWrite]
    ) -> builtins.list[Any] | None:
        """A TAIL / FROM_WRITES entry when ``new`` is ``old`` with elements appended."""
        if old is None or old[0] != "msgpack" or new[0] != "msgpack":
            return None
        old_split = codec.split_array(old[1])
        new_split = codec.split_array(new[1])
        if old_split is None or new_split is None:
            return None
        old_count, old_body = old_split
        new_count, new_body = new_split
        if new_count <= old_count or not new_body.startswith(old_body):
            return None
        tail = new_body[len(old_body) :]
        added = new_count - old_count
        parts: builtins.list[bytes] = []
        refs: builtins.list[Any] = []
        count = 0
        for write in DynamoDBSaver._sorted_writes(parent_writes):
            if write.channel != channel:
                continue
            if write.data is None:
                return [TAIL, added, tail]  # a write in S3: keep the tail inline
            elements = codec.as_elements((write.type_, write.data))
            if elements is None:
                return [TAIL, added, tail]
            count += elements[0]
            parts.append(elements[1])
            refs.extend((write.task_id[:_TASK_REF], write.idx))
        if count == added and b"".join(parts) == tail:
            return [FROM_WRITES, added, refs]
        return [TAIL, added, tail]

    @staticmethod
    def _written_value(
        new: Typed, channel: str, parent_writes: builtins.list[StoredWrite]
    ) -> tuple[builtins.list[Any], str] | None:
        """A WRITE_VALUE entry when ``new`` is exactly what one parent write stored (a
        channel set by a write: the graph input, a last-value channel)."""
        if len(new[1]) < 64:
            return None  # an inline value is as small as a reference
        matches = [
            w
            for w in parent_writes
            if w.channel == channel and w.type_ == new[0] and w.data == new[1]
        ]
        if len(matches) != 1:
            return None
        write = matches[0]
        return [WRITE_VALUE, write.task_id[:_TASK_REF], write.idx], write.sort_key

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store one task's writes: one PutItem per call (values over the limit go to S3)."""
        if not writes:
            return
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        checkpoint_id: str = configurable["checkpoint_id"]
        _check_key_part("task_id", task_id)
        if task_id.startswith(codec.TASK_KEY_MARK):
            raise ValueError(f"task_id must not start with U+001D: {task_id!r}")
        # Registered before any work so a put() running concurrently knows to wait for it.
        batch = _WriteBatch(writes=[])
        with self._lock:
            by_checkpoint = self._writes.setdefault((thread_id, ns), OrderedDict())
            self._writes.move_to_end((thread_id, ns))
            by_checkpoint.setdefault(checkpoint_id, []).append(batch)
            while len(by_checkpoint) > 4:
                by_checkpoint.popitem(last=False)
            self._trim()
        try:
            self._put_writes(thread_id, ns, checkpoint_id, writes, task_id, task_path, batch)
        finally:
            batch.done.set()

    def _put_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
        batch: _WriteBatch,
    ) -> None:
        stored: builtins.list[StoredWrite] = []
        for idx, (channel, value) in enumerate(writes):
            type_, data = self.serde.dumps_typed(value)
            stored.append(
                StoredWrite(
                    task_id=task_id,
                    task_path=task_path,
                    idx=WRITES_IDX_MAP.get(channel, idx),
                    channel=channel,
                    type_=type_,
                    data=data,
                )
            )
        expiry = self._expiry(self._clock())  # before any S3 object is created
        first_idx = stored[0].idx
        suffix = f"{checkpoint_id}{SEP}{codec.task_key(task_id)}{SEP}{first_idx}"
        sort_key = _prefix(ns) + suffix
        for write in stored:
            write.sort_key = suffix
        target = _Target(
            thread_id, ns, f"the writes of task {task_id!r} to checkpoint {checkpoint_id!r}"
        )
        self._offload_writes(target, checkpoint_id, stored)
        while True:
            data = codec.encode_writes(task_path, stored, self.compress_min_bytes)
            size = _item_size(thread_id, sort_key, data)
            if size <= _ITEM_LIMIT:
                break
            # Many writes, each small: their keys and names fill the item; move them all.
            if not self._offload_writes(target, checkpoint_id, stored, 0):
                raise CheckpointWriteError(
                    thread_id,
                    ns,
                    target.what,
                    f"its item would be {size:,} bytes with every value in S3, more than "
                    f"DynamoDB holds ({ITEM_LIMIT_TEXT}): {len(stored)} writes in one call",
                )
        batch.writes = stored
        with self._lock:
            state = self._state.get((thread_id, ns))
            if state is not None:
                state.window[suffix] = _item_size(thread_id, sort_key, data)
                if expiry is not None:
                    state.expires[suffix] = expiry
        item = {
            _PK: {"S": thread_id},
            _SK: {"S": sort_key},
            _DATA: {"B": data},
            **self._ttl_attr(expiry),
        }
        if all(w.idx >= 0 for w in stored):
            # First write wins, as in LangGraph's savers: a re-run task (a retry, a fork)
            # must not change writes that later checkpoints were rebuilt from. When an
            # earlier call won, what is stored may differ from this batch, so nothing may
            # be rebuilt from it (ok stays False).
            batch.ok = self._put_item(item, only_new=True)
            if not batch.ok and expiry is not None:
                with self._lock:
                    state = self._state.get((thread_id, ns))
                    if state is not None and suffix in state.expires:
                        # The item that won is older, its ttl unknown here: count it as
                        # expiring, so no checkpoint comes to rely on it (compaction).
                        state.expires[suffix] = 0
        else:
            batch.ok = self._put_item(item)

    def _offload_writes(
        self,
        target: _Target,
        checkpoint_id: str,
        stored: builtins.list[StoredWrite],
        budget: int = _ITEM_BUDGET,
    ) -> bool:
        """Move the largest write values to S3 until the inline ones take at most ``budget``
        bytes; True if any moved. The bytes stay in memory (append detection uses them)."""
        inline = [w for w in stored if w.s3_key is None and w.data is not None]
        total = sum(len(w.data or b"") for w in inline)
        moved = False
        for write in sorted(inline, key=lambda w: -len(w.data or b"")):
            if total <= budget:
                break
            assert write.data is not None
            # The content's digest in the key: a re-run task writing another value under the
            # same (task, idx) loses the conditional put and must not overwrite the object
            # the first write's item points at.
            digest = hashlib.blake2b(write.data, digest_size=8).hexdigest()
            key = self._s3_key(
                target.thread_id,
                target.ns,
                checkpoint_id,
                f"w{SEP}{write.task_id}{SEP}{write.idx}{SEP}{digest}",
            )
            part = f"the write to channel {write.channel!r} (index {write.idx})"
            self._s3_put(target, part, key, write.data)
            write.s3_key = key
            total -= len(write.data)
            moved = True
        return moved

    def _remember(self, thread_id: str, ns: str, state: _ThreadState) -> None:
        """Keep ``state`` as the latest for (thread, ns); caller holds the lock."""
        self._state[(thread_id, ns)] = state
        self._state.move_to_end((thread_id, ns))
        self._trim()

    def _trim(self) -> None:
        while len(self._state) > _CACHED_THREADS:
            self._state.popitem(last=False)
        while len(self._writes) > _CACHED_THREADS:
            self._writes.popitem(last=False)

    def _await_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> bool:
        """LangGraph saves a task's writes and the next checkpoint from different threads,
        so put() can start before that put_writes() has registered. When a list channel
        changed and no write is known yet, give the writer a moment; True if one showed."""
        deadline = time.monotonic() + _AWAIT_WRITES_S
        while time.monotonic() < deadline:
            with self._lock:
                by_checkpoint = self._writes.get((thread_id, ns))
                if by_checkpoint and by_checkpoint.get(checkpoint_id):
                    return True
            time.sleep(0.002)
        return False

    def _saved_writes(
        self, thread_id: str, ns: str, checkpoint_id: str
    ) -> builtins.list[StoredWrite]:
        """This saver's writes to a checkpoint that are known to be stored."""
        with self._lock:
            by_checkpoint = self._writes.get((thread_id, ns))
            batches = list(by_checkpoint.get(checkpoint_id, [])) if by_checkpoint else []
        result: builtins.list[StoredWrite] = []
        for batch in batches:
            # A put_writes still in flight: wait for it, the checkpoint may depend on it.
            if batch.done.wait(timeout=60) and batch.ok:
                result.extend(batch.writes)
        return result

    # ---------------------------------------------------- delta channel support

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> dict[str, DeltaChannelHistory]:
        """Per-channel writes since the nearest stored value, from one ranged read of the
        namespace rather than one ``get_tuple`` per ancestor (``DeltaChannel`` support)."""
        if not channels:
            return {}
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        prefix = _prefix(ns)
        upper = prefix + checkpoint_id + _AFTER_SEP if checkpoint_id else None
        with self._lock:
            # Taken, not shared: _Items loads pages into its own dicts as it goes, so two
            # threads must never walk the same one.
            cached, self._last_items = self._last_items, None
        if (
            cached is not None
            and checkpoint_id == cached[0]
            and (cached[1].thread_id, cached[1].ns) == (thread_id, ns)
        ):
            target: str | None = cached[0]
            items = cached[1]
        else:
            items = _Items(self, thread_id, ns, upper=upper)
            target = items.latest()
        collected: dict[str, builtins.list[PendingWrite]] = {c: [] for c in channels}
        seeds: dict[str, Any] = {}
        remaining = set(channels)
        record = items.record(target) if target is not None else None
        cursor = record.parent if record is not None else None
        while cursor is not None and remaining:
            # Walk back page by page, not one query per ancestor.
            while cursor not in items.records and items.more():
                pass
            ancestor = items.record(cursor)
            if ancestor is None:
                break
            for write in reversed(self._sorted_writes(items.writes.get(cursor, []))):
                if write.channel in remaining:
                    value = self.serde.loads_typed(self._write_value(write))
                    collected[write.channel].append((write.task_id, write.channel, value))
            items.ensure_down_to(items.prefix + self._base(items, cursor))
            ancestor_versions = self._resolve(items, cursor).versions
            for channel in list(remaining):
                if channel not in ancestor_versions:
                    continue
                typed, _ = self._value(items, cursor, channel)
                if typed is not None:
                    seeds[channel] = self.serde.loads_typed(typed)
                    remaining.discard(channel)
            cursor = ancestor.parent
        result: dict[str, DeltaChannelHistory] = {}
        for channel in channels:
            entry: DeltaChannelHistory = {"writes": list(reversed(collected[channel]))}
            if channel in seeds:
                entry["seed"] = seeds[channel]
            result[channel] = entry
        return result

    # ------------------------------------------------------- thread management

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and S3 object of a thread."""
        items = self._all_items(thread_id, projection=True)
        self._batch_write([{"DeleteRequest": {"Key": {_PK: i[_PK], _SK: i[_SK]}}} for i in items])
        self._s3_delete_prefix(self._s3_prefix(thread_id))
        with self._lock:
            for key in [k for k in self._state if k[0] == thread_id]:
                del self._state[key]

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread (S3 objects included) to another."""
        expiry = self._expiry(self._clock())
        requests: builtins.list[dict[str, Any]] = []
        for item in self._all_items(source_thread_id):
            sk = item[_SK]["S"]
            data = self._copy_s3_refs(item[_DATA]["B"], sk, source_thread_id, target_thread_id)
            requests.append(
                {
                    "PutRequest": {
                        "Item": {
                            _PK: {"S": target_thread_id},
                            _SK: {"S": sk},
                            _DATA: {"B": data},
                            # One expiry for the whole copy: every item outlives what reads it.
                            **self._ttl_attr(expiry),
                        }
                    }
                }
            )
        self._batch_write(requests)

    def _copy_s3_refs(self, data: bytes, sk: str, source: str, target: str) -> bytes:
        if self.s3 is None:
            return data
        old_prefix, new_prefix = self._s3_prefix(source), self._s3_prefix(target)

        def moved(key: str) -> str:
            new_key = new_prefix + key[len(old_prefix) :]
            self._s3_copy(key, new_key)
            return new_key

        if _is_side(sk):
            return data
        rest = sk.partition(SEP)[2]
        if SEP in rest:
            task_path, entries = codec.unpack(data)
            changed = False
            for e in entries:
                if len(e) > 4:
                    e[4] = moved(e[4])
                    changed = True
            return codec.pack([task_path, entries]) if changed else data
        record = CheckpointRecord.decode(data)
        changed = False
        for entry in record.blobs.values():
            if entry[0] in (S3_FULL, S3_TAIL):
                entry[2] = moved(entry[2])
                changed = True
        return record.encode(self.compress_min_bytes) if changed else data

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's latest checkpoint (stored self-contained)
        and its writes; ``delete``: remove the threads entirely."""
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}")
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            keep: set[str] = set()
            doomed: builtins.list[str] = []
            for ns in self._namespaces(thread_id):
                items = _Items(self, thread_id, ns)
                items.load_all()
                latest = items.latest()
                if latest is None:
                    continue
                self._rewrite_full(items, latest)
                doomed.extend(self._side_keys(thread_id, ns))  # the latest is inline now
                prefix = _prefix(ns)
                kept_prefix = prefix + latest
                for sk in items.sort_keys:
                    if sk == kept_prefix or sk.startswith(kept_prefix + SEP):
                        keep.add(sk)
                    else:
                        doomed.append(sk)
            self._delete_keys(thread_id, doomed)
            self._s3_delete_prefix(self._s3_prefix(thread_id), keep=self._referenced_s3(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) created by the given runs; later
        checkpoints that were rebuilt from them are first re-stored self-contained."""
        if not run_ids:
            return
        wanted = set(run_ids)
        for thread_id, ns in self._scan_groups():
            items = _Items(self, thread_id, ns)
            items.load_all()
            doomed_ids = {
                cid
                for cid in items.records
                if self._resolve(items, cid).metadata.get("run_id") in wanted
            }
            if not doomed_ids:
                continue
            oldest_doomed = min(doomed_ids)
            rewritten: set[str] = set()
            for cid in sorted(items.records):
                record = items.records[cid]
                depends = self._base(items, cid) <= max(doomed_ids) and cid > oldest_doomed
                # A SAME_SEEN record repeats its parent's raw diff, which a full rewrite of
                # the parent drops: re-store it in full too (the resolve below still reads
                # the old items, which are in memory).
                repeats = record.parent in rewritten and not isinstance(record.versions_seen, dict)
                if cid not in doomed_ids and (depends or repeats):
                    self._rewrite_full(items, cid)
                    rewritten.add(cid)
            prefix = _prefix(ns)
            doomed = [
                sk for sk in items.sort_keys if sk[len(prefix) :].split(SEP, 1)[0] in doomed_ids
            ]
            doomed.extend(
                sk
                for sk in self._side_keys(thread_id, ns)
                if sk.split(SIDE_SEP, 1)[1].split(SEP, 1)[0] in doomed_ids
            )
            self._delete_keys(thread_id, doomed)
            self._s3_delete_prefix(self._s3_prefix(thread_id), keep=self._referenced_s3(thread_id))

    def _side_keys(self, thread_id: str, ns: str) -> builtins.list[str]:
        """Sort keys of a namespace's side items (graph inputs)."""
        params: dict[str, Any] = {
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#pk": _PK, "#sk": _SK},
            "ExpressionAttributeValues": {
                ":pk": {"S": thread_id},
                ":lo": {"S": ns + SIDE_SEP},
                ":hi": {"S": ns + SIDE_SEP + _TOP},
            },
            "ProjectionExpression": "#sk",
        }
        keys: builtins.list[str] = []
        while True:
            response = self._query(params)
            keys.extend(i[_SK]["S"] for i in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if last is None:
                return keys
            params["ExclusiveStartKey"] = last

    def _rewrite_full(self, items: _Items, checkpoint_id: str) -> None:
        """Re-store a checkpoint with every value in full, so it depends on no other item."""
        record = items.records[checkpoint_id]
        resolved = self._resolve(items, checkpoint_id)
        blobs: dict[str, builtins.list[Any]] = {}
        for channel in resolved.versions:
            typed, _ = self._value(items, checkpoint_id, channel)
            if typed is None:
                blobs[channel] = [EMPTY]
            else:
                blobs[channel] = [FULL, codec.type_code(typed[0]), typed[1]]
        full = CheckpointRecord(
            parent=record.parent,
            ts=record.ts,
            v=record.v,
            channel_versions=resolved.versions,
            versions_seen=resolved.seen,
            updated_channels=resolved.updated,
            metadata=self.serde.dumps_typed(resolved.metadata),
            base=checkpoint_id,
            blobs=blobs,
            extra=record.extra,
        )
        sort_key = items.prefix + checkpoint_id
        target = _Target(items.thread_id, items.ns, f"checkpoint {checkpoint_id!r} (in full)")
        data = self._encode_record(target, checkpoint_id + "-full", full, sort_key)
        self._put_item(
            {
                _PK: {"S": items.thread_id},
                _SK: {"S": sort_key},
                _DATA: {"B": data},
                # Its own retention is kept: pruning or deleting runs does not extend it.
                **self._ttl_attr(items.expires.get(checkpoint_id)),
            }
        )
        with self._lock:
            self._state.pop((items.thread_id, items.ns), None)

    def _delete_keys(self, thread_id: str, sort_keys: builtins.list[str]) -> None:
        self._batch_write(
            [
                {"DeleteRequest": {"Key": {_PK: {"S": thread_id}, _SK: {"S": sk}}}}
                for sk in sort_keys
            ]
        )
        with self._lock:
            for key in [k for k in self._state if k[0] == thread_id]:
                del self._state[key]

    def _referenced_s3(self, thread_id: str) -> set[str]:
        if self.s3 is None:
            return set()
        keys: set[str] = set()
        for item in self._all_items(thread_id):
            sk = item[_SK]["S"]
            data = item[_DATA]["B"]
            if _is_side(sk):
                continue
            if SEP in sk.partition(SEP)[2]:
                _, entries = codec.unpack(data)
                keys.update(e[4] for e in entries if len(e) > 4)
            else:
                record = CheckpointRecord.decode(data)
                keys.update(e[2] for e in record.blobs.values() if e[0] in (S3_FULL, S3_TAIL))
        return keys

    # ------------------------------------------------------------ versions

    def get_next_version(self, current: int | str | None, channel: None) -> int:
        """Plain increasing integers: values are keyed by checkpoint, not by version, so
        versions need no random suffix to stay unique, and short versions keep items small."""
        if current is None:
            return 1
        if isinstance(current, str):
            return int(current.split(".")[0]) + 1
        return int(current) + 1

    # ----------------------------------------------------------------- async

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

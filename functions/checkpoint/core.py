"""What every path of the saver shares: its settings and caches, and its DynamoDB calls."""

from __future__ import annotations

import builtins
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from langgraph.checkpoint.base import BaseCheckpointSaver

from functions.checkpoint.errors import CheckpointTableMissingError
from functions.checkpoint.layout import (
    BATCH,
    CACHED_THREADS,
    PK,
    SIDE_SEP,
    SK,
    TOP,
    TTL,
    namespace_of,
)
from functions.checkpoint.state import ThreadState, WriteBatch


class SaverCore(BaseCheckpointSaver[int]):
    """Settings, caches and DynamoDB requests (``DynamoDBSaver.__init__`` sets them)."""

    table_name: str
    bucket_name: str | None
    ttl_seconds: int | None
    read_items: int
    compress_min_bytes: int | None
    client: Any
    s3: Any
    _clock: Callable[[], float]
    _ttl_margin: float
    _lock: threading.Lock
    # Bounded (least recently used out): one saver may serve many threads in a process.
    _state: OrderedDict[tuple[str, str], ThreadState]
    # (thread, ns) -> checkpoint id -> write batches, for the few newest checkpoints.
    _writes: OrderedDict[tuple[str, str], OrderedDict[str, builtins.list[WriteBatch]]]

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
            params["ExpressionAttributeNames"] = {"#sk": SK}
        try:
            self.client.put_item(**params)
        except ClientError as exc:
            if only_new and exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise self._wrap(exc) from exc
        return True

    def _batch_write(self, requests: builtins.list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), BATCH):
            pending: dict[str, Any] = {self.table_name: requests[start : start + BATCH]}
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

    def _all_items(
        self, thread_id: str, *, projection: bool = False
    ) -> builtins.list[dict[str, Any]]:
        params: dict[str, Any] = {
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": PK},
            "ExpressionAttributeValues": {":pk": {"S": thread_id}},
            "ConsistentRead": True,
        }
        if projection:
            params["ProjectionExpression"] = "#pk, #sk"
            params["ExpressionAttributeNames"]["#sk"] = SK
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
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
        }
        while True:
            try:
                response = self.client.scan(TableName=self.table_name, **params)
            except ClientError as exc:
                raise self._wrap(exc) from exc
            for item in response.get("Items", []):
                groups.add((item[PK]["S"], namespace_of(item[SK]["S"])))
            last = response.get("LastEvaluatedKey")
            if last is None:
                return sorted(groups)
            params["ExclusiveStartKey"] = last

    def _side_keys(self, thread_id: str, ns: str) -> builtins.list[str]:
        """Sort keys of a namespace's side items (graph inputs)."""
        params: dict[str, Any] = {
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {
                ":pk": {"S": thread_id},
                ":lo": {"S": ns + SIDE_SEP},
                ":hi": {"S": ns + SIDE_SEP + TOP},
            },
            "ProjectionExpression": "#sk",
        }
        keys: builtins.list[str] = []
        while True:
            response = self._query(params)
            keys.extend(i[SK]["S"] for i in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if last is None:
                return keys
            params["ExclusiveStartKey"] = last

    def _expiry(self, now: float) -> int | None:
        """The ``ttl`` of an item written at ``now``: the retention plus the margin within
        which later checkpoints may still be rebuilt from it (see put())."""
        if self.ttl_seconds is None:
            return None
        return math.ceil(now + self.ttl_seconds + self._ttl_margin)

    @staticmethod
    def _ttl_attr(expiry: int | None) -> dict[str, Any]:
        return {} if expiry is None else {TTL: {"N": str(expiry)}}

    def _remember(self, thread_id: str, ns: str, state: ThreadState) -> None:
        """Keep ``state`` as the latest for (thread, ns); caller holds the lock."""
        self._state[(thread_id, ns)] = state
        self._state.move_to_end((thread_id, ns))
        self._trim()

    def _trim(self) -> None:
        while len(self._state) > CACHED_THREADS:
            self._state.popitem(last=False)
        while len(self._writes) > CACHED_THREADS:
            self._writes.popitem(last=False)

"""LangGraph's node cache (``CachePolicy``) on DynamoDB, shared by every worker and run.

Data model (one table, ``functions.resources.CACHE_TABLE``):

* ``pk``: the namespace, as a JSON array (``["__pregel_ns_writes", "<module.qualname>",
  "<node>"]`` for a node's writes), so ``clear(namespaces)`` is one ``Query`` per namespace;
* ``sk``: ``k#`` + the key (LangGraph's is a 32-character xxh3 hash of the node's input);
* ``enc`` / ``val``: the value as the cache's serde typed it (``dumps_typed``);
* ``expires_at``: epoch seconds at which the entry stops being served, when it has a TTL.
  It is the table's DynamoDB TTL attribute, but DynamoDB deletes expired items lazily (within
  days), so reads skip an expired item themselves.

A key or namespace longer than DynamoDB allows in a key attribute (1 KB sort key, 2 KB
partition key) is stored under its SHA-256 (``sha256:<hex>``), which no plain key collides
with (plain keys start with ``k#``, namespaces with ``[``).

Batched as the interface is: ``get`` is ``BatchGetItem`` (100 keys a request), ``set`` and
deletes are ``BatchWriteItem`` (25 items a request); what DynamoDB leaves unprocessed is
retried with backoff. Reads are eventually consistent: a miss only means the node runs.

Values over DynamoDB's 400 KB item limit are not cached (a warning names the namespace and
size): a cache entry is an optimisation, and storing it in S3 would cost a second request on
every hit of what is, at that size, rarely cheaper to fetch than to recompute.

Example:
    ```python
    cache = DynamoDBCache("lambdagraph-nodecache")
    cache.setup()  # creates the table when missing (local stack, tests)
    builder.add_node("search", search, cache_policy=CachePolicy(ttl=3600))
    graph = builder.compile(checkpointer=saver, cache=cache)
    ```
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from langgraph.cache.base import BaseCache, FullKey, Namespace, ValueT
from langgraph.checkpoint.serde.base import SerializerProtocol

from functions import clock
from functions.cache.errors import CacheTableMissingError
from functions.resources import CACHE_TABLE

logger = Logger(child=True)

PK = CACHE_TABLE.partition_key
SK = CACHE_TABLE.sort_key or "sk"
EXPIRES_AT = CACHE_TABLE.ttl_attribute or "expires_at"
ENC = "enc"
VAL = "val"
KEY_PREFIX = "k#"
HASH_PREFIX = "sha256:"

# DynamoDB's limits (Developer Guide, "Service, account, and table quotas").
MAX_ITEM_BYTES = 400 * 1024
MAX_PK_BYTES = 2048
MAX_SK_BYTES = 1024
BATCH_GET_KEYS = 100
BATCH_WRITE_ITEMS = 25
# An item's size counts attribute names and values; a number takes at most 21 bytes.
_ITEM_OVERHEAD_BYTES = len(PK) + len(SK) + len(ENC) + len(VAL) + len(EXPIRES_AT) + 21

# Unprocessed keys/items: retried this many times, backing off from BACKOFF_S to at most
# BACKOFF_MAX_S (with jitter), on top of botocore's own retries of throttled requests.
UNPROCESSED_ATTEMPTS = 6
BACKOFF_S = 0.05
BACKOFF_MAX_S = 1.0

# Errors that say "not now" rather than "never": after botocore's retries they degrade to a
# miss (get) or an entry not written (set). Anything else is a misconfiguration and raises.
_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
_TRANSIENT_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)

T = TypeVar("T")
Item = dict[str, Any]
ItemKey = tuple[str, str]


class DynamoDBCache(BaseCache[ValueT]):
    """LangGraph ``BaseCache`` on DynamoDB: entries shared across processes, TTL honoured.

    Args:
        table_name: the cache table (key schema: ``functions.resources.CACHE_TABLE``).
        client: a boto3 DynamoDB client (default: ``functions.aws.dynamodb_client()``).
        serde: LangGraph serializer (default: ``BaseCache``'s, ``JsonPlusSerializer``
            without pickle).
        clock: epoch seconds for TTLs (default: ``functions.clock.now``, read at each call,
            so a test's simulated clock applies).
    """

    def __init__(
        self,
        table_name: str,
        *,
        client: Any | None = None,
        serde: SerializerProtocol | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.table_name = table_name
        self._client = client
        self._clock = clock

    @property
    def client(self) -> Any:
        # Made on first use: every graph the platform compiles gets the cache, most never
        # use it, and a cold start should not pay for a client nobody calls.
        if self._client is None:
            from functions.aws import dynamodb_client

            self._client = dynamodb_client()
        return self._client

    def _now(self) -> float:
        return self._clock() if self._clock is not None else clock.now()

    # --- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the table with its TTL when missing (local stack, tests); idempotent."""
        CACHE_TABLE.ensure_table(self.client, self.table_name)

    # --- BaseCache -------------------------------------------------------------------------

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """The unexpired values of ``keys`` (missing keys are left out)."""
        wanted: dict[ItemKey, FullKey] = {}
        for ns, key in keys:
            wanted[item_key(ns, key)] = (tuple(ns), key)
        if not wanted:
            return {}
        now = self._now()
        found: dict[FullKey, ValueT] = {}
        for chunk in _chunks(list(wanted), BATCH_GET_KEYS):
            for item in self._batch_get(chunk):
                full_key = wanted.get((item[PK]["S"], item[SK]["S"]))
                if full_key is None or _expired(item, now):
                    continue
                found[full_key] = self.serde.loads_typed((item[ENC]["S"], item[VAL]["B"]))
        logger.debug("node cache read", extra={"keys": len(wanted), "hits": len(found)})
        return found

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        return await asyncio.to_thread(self.get, keys)

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Store each value for ``ttl`` seconds (``None``: until cleared)."""
        if not pairs:
            return
        now = self._now()
        items: dict[ItemKey, Item] = {}
        for (ns, key), (value, ttl) in pairs.items():
            item = self._item(ns, key, value, ttl, now)
            if item is not None:
                items[(item[PK]["S"], item[SK]["S"])] = item
        self._batch_write([{"PutRequest": {"Item": item}} for item in items.values()])

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        await asyncio.to_thread(self.set, pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the entries of ``namespaces`` (each exactly, not its children); all if None.

        Clearing everything scans the table: an operator's tool (``graph.clear_cache()``
        always names namespaces), so no function is granted ``Scan``.
        """
        if namespaces is None:
            keys = self._scan_keys()
        else:
            pks = dict.fromkeys(partition_key(ns) for ns in namespaces)
            keys = (key for pk in pks for key in self._query_keys(pk))
        self._batch_write(
            [
                {"DeleteRequest": {"Key": {PK: {"S": pk}, SK: {"S": sk}}}}
                for pk, sk in dict.fromkeys(keys)
            ]
        )

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        await asyncio.to_thread(self.clear, namespaces)

    # --- items -----------------------------------------------------------------------------

    def _item(
        self, ns: Namespace, key: str, value: ValueT, ttl: int | None, now: float
    ) -> Item | None:
        """The item for one entry, or None (with a warning) when it exceeds the item limit."""
        enc, data = self.serde.dumps_typed(value)
        pk, sk = item_key(ns, key)
        item: Item = {PK: {"S": pk}, SK: {"S": sk}, ENC: {"S": enc}, VAL: {"B": data}}
        if ttl is not None:
            # Whole seconds (DynamoDB TTL reads an integer), rounded down: an entry may stop
            # being served up to a second early, never late.
            item[EXPIRES_AT] = {"N": str(int(now) + int(ttl))}
        size = len(pk.encode()) + len(sk.encode()) + len(enc.encode()) + len(data)
        if size + _ITEM_OVERHEAD_BYTES > MAX_ITEM_BYTES:
            logger.warning(
                "node cache entry not stored: larger than a DynamoDB item",
                extra={"namespace": list(ns), "bytes": size, "limit_bytes": MAX_ITEM_BYTES},
            )
            return None
        return item

    # --- requests --------------------------------------------------------------------------

    def _batch_get(self, keys: Sequence[ItemKey]) -> Iterator[Item]:
        """Items of ``keys`` (at most 100), retrying what DynamoDB leaves unprocessed."""
        request: dict[str, Any] | None = {
            self.table_name: {"Keys": [{PK: {"S": pk}, SK: {"S": sk}} for pk, sk in keys]}
        }
        for attempt in range(UNPROCESSED_ATTEMPTS + 1):
            if not request:
                return
            if attempt:
                _backoff(attempt)
            response = self._call("BatchGetItem", self.client.batch_get_item, request)
            if response is None:
                return  # transient failure: the rest are misses
            yield from response.get("Responses", {}).get(self.table_name, [])
            request = response.get("UnprocessedKeys") or None
        if request:
            logger.warning(
                "node cache read left keys unprocessed: served as misses",
                extra={"keys": len(request[self.table_name]["Keys"])},
            )

    def _batch_write(self, requests: Sequence[dict[str, Any]]) -> None:
        """Puts and deletes, 25 a request, retrying what DynamoDB leaves unprocessed."""
        for chunk in _chunks(requests, BATCH_WRITE_ITEMS):
            pending: dict[str, Any] | None = {self.table_name: list(chunk)}
            for attempt in range(UNPROCESSED_ATTEMPTS + 1):
                if not pending:
                    break
                if attempt:
                    _backoff(attempt)
                response = self._call("BatchWriteItem", self.client.batch_write_item, pending)
                if response is None:
                    break  # transient failure: logged; these entries are not written
                pending = response.get("UnprocessedItems") or None
            else:
                if pending:
                    logger.warning(
                        "node cache write left items unprocessed: not written",
                        extra={"items": len(pending[self.table_name])},
                    )

    def _query_keys(self, pk: str) -> Iterator[ItemKey]:
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ProjectionExpression": "#pk, #sk",
        }
        yield from self._pages(self.client.query, params)

    def _scan_keys(self) -> Iterator[ItemKey]:
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ProjectionExpression": "#pk, #sk",
        }
        yield from self._pages(self.client.scan, params)

    def _pages(self, call: Callable[..., Any], params: dict[str, Any]) -> Iterator[ItemKey]:
        while True:
            try:
                response = call(**params)
            except ClientError as exc:
                raise self._wrapped(exc) from exc
            for item in response.get("Items", []):
                yield item[PK]["S"], item[SK]["S"]
            if "LastEvaluatedKey" not in response:
                return
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _call(
        self, operation: str, call: Callable[..., T], request_items: dict[str, Any]
    ) -> T | None:
        """``call(RequestItems=...)``; None when AWS failed transiently (logged)."""
        try:
            return call(RequestItems=request_items)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in _TRANSIENT_CODES:
                raise self._wrapped(exc) from exc
            reason = exc.response["Error"]["Code"]
        except _TRANSIENT_ERRORS as exc:
            reason = type(exc).__name__
        logger.warning(
            "node cache request failed: carrying on without the cache",
            extra={"operation": operation, "reason": reason},
        )
        return None

    def _wrapped(self, exc: ClientError) -> Exception:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return CacheTableMissingError(self.table_name)
        return exc


# --- keys ------------------------------------------------------------------------------------


def partition_key(ns: Namespace) -> str:
    """The ``pk`` of namespace ``ns``: its JSON array (hashed if too long for a key)."""
    text = json.dumps(list(ns), ensure_ascii=False, separators=(",", ":"))
    return _bounded(text, MAX_PK_BYTES)


def item_key(ns: Namespace, key: str) -> ItemKey:
    """(``pk``, ``sk``) of the entry ``(ns, key)``."""
    return partition_key(ns), _bounded(KEY_PREFIX + key, MAX_SK_BYTES)


def _bounded(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return HASH_PREFIX + hashlib.sha256(data).hexdigest()


def _expired(item: Item, now: float) -> bool:
    expires_at = item.get(EXPIRES_AT)
    return expires_at is not None and now >= float(expires_at["N"])


def _chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _backoff(attempt: int) -> None:
    delay = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1))
    time.sleep(delay * random.uniform(0.5, 1.0))

"""LangGraph's long-term memory store (``BaseStore``) on DynamoDB, shared by every run,
thread and worker.

Data model (one table, ``functions.resources.MEMORY_TABLE``): an item per memory,

* ``pk``: ``NS#`` + the namespace's first label (a user id, say);
* ``sk``: each further label followed by ``\\x1f``, then ``\\x1e`` and the key — so
  ``("users", "u1", "prefs")`` / ``"theme"`` is ``NS#users`` / ``u1\\x1fprefs\\x1f\\x1etheme``;
* ``value``: the value as JSON text (what the official server's API carries);
* ``created_at`` / ``updated_at``: ISO-8601, UTC; an update keeps ``created_at``;
* ``expires_at`` / ``ttl_minutes``: when the memory was put with a TTL (minutes, as
  LangGraph counts it): the DynamoDB TTL attribute and the TTL a read refreshes it by.

DynamoDB cannot query by a prefix of a partition key, hence the split: a search or a
namespace listing under a prefix of one label is one ``Query`` on its partition, under two or
more labels a ``Query`` with ``begins_with`` on ``sk`` (the ``\\x1f`` after each label keeps
``("u", "a")`` from matching ``("u", "ab")``). Under the empty prefix it is a ``Scan`` of
the whole table (docs/memory.md, "Costs"). Results come in namespace-then-key order (the
table's own order; InMemoryStore returns insertion order, PostgresStore newest first).

Reads are strongly consistent (a memory written by one step is seen by the next, on any
worker); gets are ``BatchGetItem``, 100 keys a request. A put is one ``UpdateItem`` (it keeps
``created_at`` without reading first), a delete one ``DeleteItem``. Filters are applied to
the items read, as LangGraph's InMemoryStore applies them (equality, nested equality, and
``$eq``/``$ne``/``$gt``/``$gte``/``$lt``/``$lte``), so a selective filter still reads the
prefix's items. Expired memories are never served (DynamoDB deletes them within days).

There is no vector search: an ``index`` configuration raises, and ``query`` is ignored as
InMemoryStore ignores it without an index.

Example:
    ```python
    store = DynamoDBStore("lambdagraph-memory")
    store.setup()  # creates the table when missing (local stack, tests)
    store.put(("users", "u1"), "prefs", {"theme": "dark"})
    store.search(("users",), filter={"theme": "dark"})
    graph = builder.compile(checkpointer=saver, store=store)
    ```
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)

from functions import clock
from functions.memory.errors import (
    MemoryItemTooLargeError,
    MemoryKeyTooLongError,
    MemoryLabelError,
    MemoryTableMissingError,
    MemoryThrottledError,
    VectorSearchUnsupportedError,
)
from functions.resources import MEMORY_TABLE

logger = Logger(child=True)

PK = MEMORY_TABLE.partition_key
SK = MEMORY_TABLE.sort_key or "sk"
EXPIRES_AT = MEMORY_TABLE.ttl_attribute or "expires_at"
VALUE = "value"
CREATED_AT = "created_at"
UPDATED_AT = "updated_at"
TTL_MINUTES = "ttl_minutes"
PK_PREFIX = "NS#"
LABEL_END = "\x1f"
KEY_START = "\x1e"

# DynamoDB's limits (Developer Guide, "Service, account, and table quotas").
# 400 KB read as 400,000 bytes (the conservative reading; DynamoDB accepts a little more).
MAX_ITEM_BYTES = 400_000
MAX_PK_BYTES = 2048
MAX_SK_BYTES = 1024
BATCH_GET_KEYS = 100
# An item's size counts attribute names and values; a number takes at most 21 bytes, an
# ISO-8601 timestamp with microseconds and offset 32.
_ITEM_OVERHEAD_BYTES = (
    len(PK)
    + len(SK)
    + len(VALUE)
    + len(CREATED_AT)
    + len(UPDATED_AT)
    + 2 * 32
    + len(EXPIRES_AT)
    + len(TTL_MINUTES)
    + 2 * 21
)

# Unprocessed keys: retried this many times, backing off from BACKOFF_S to BACKOFF_MAX_S.
UNPROCESSED_ATTEMPTS = 6
BACKOFF_S = 0.05
BACKOFF_MAX_S = 1.0

# 9999-12-31T23:59:59Z, the latest expiry stored.
_LAST_EXPIRY = 253_402_300_799

Raw = dict[str, Any]
ItemKey = tuple[str, str]


class DynamoDBStore(BaseStore):
    """LangGraph ``BaseStore`` on DynamoDB: memories shared across runs, threads and workers.

    Args:
        table_name: the memory table (key schema: ``functions.resources.MEMORY_TABLE``).
        client: a boto3 DynamoDB client (default: ``functions.aws.dynamodb_client()``).
        ttl: LangGraph's ``TTLConfig`` (``default_ttl`` in minutes, ``refresh_on_read``);
            expired memories are never served, DynamoDB's TTL deletes them.
        index: not supported (no vector search): raises ``VectorSearchUnsupportedError``.
        clock: epoch seconds (default: ``functions.clock.now``, read at each call).
    """

    supports_ttl = True

    def __init__(
        self,
        table_name: str,
        *,
        client: Any | None = None,
        ttl: TTLConfig | None = None,
        index: Any | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if index:
            raise VectorSearchUnsupportedError()
        self.table_name = table_name
        self.ttl_config = ttl
        self._client = client
        self._clock = clock

    @property
    def client(self) -> Any:
        # Made on first use: every graph the platform compiles gets the store, most never
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
        MEMORY_TABLE.ensure_table(self.client, self.table_name)

    # --- BaseStore -------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``; as InMemoryStore, every read sees the store as it was before the batch's
        writes, and of several writes to one key the last wins."""
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
            _check_labels(op)
        writes: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if isinstance(op, PutOp):
                writes[(tuple(op.namespace), op.key)] = op
            elif not isinstance(op, GetOp | SearchOp | ListNamespacesOp):
                raise ValueError(f"Unknown operation type: {type(op)}")
        now = self._now()
        # Every write is checked before any is made: a batch with a value too large changes
        # nothing.
        updates = [self._write_request(op, now) for op in writes.values()]
        results: list[Result] = [None] * len(ops)
        gets = [(i, op) for i, op in enumerate(ops) if isinstance(op, GetOp)]
        if gets:
            self._get_many(gets, results, now)
        for i, op in enumerate(ops):
            if isinstance(op, SearchOp):
                results[i] = self._search(op, now)
            elif isinstance(op, ListNamespacesOp):
                results[i] = self._list_namespaces(op, now)
        for request in updates:
            self._write(request, now)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    # --- reads -----------------------------------------------------------------------------

    def _get_many(
        self, gets: Sequence[tuple[int, GetOp]], results: list[Result], now: float
    ) -> None:
        # An empty namespace holds nothing: BaseStore.put and our batch refuse one.
        gets = [(i, op) for i, op in gets if op.namespace]
        wanted = list(dict.fromkeys(item_key(op.namespace, op.key) for _, op in gets))
        found: dict[ItemKey, Raw] = {}
        for start in range(0, len(wanted), BATCH_GET_KEYS):
            for raw in self._batch_get(wanted[start : start + BATCH_GET_KEYS]):
                if not _expired(raw, now):
                    found[(raw[PK]["S"], raw[SK]["S"])] = raw
        refreshed: set[ItemKey] = set()
        for i, op in gets:
            key = item_key(op.namespace, op.key)
            hit = found.get(key)
            if hit is None:
                continue
            if op.refresh_ttl and key not in refreshed:
                refreshed.add(key)
                self._refresh(hit, now)
            results[i] = _item(hit)

    def _search(self, op: SearchOp, now: float) -> list[SearchItem]:
        # Negative bounds slice from the end, as InMemoryStore's do: read everything then.
        stop = op.offset + op.limit if min(op.offset, op.limit) >= 0 else None
        matched: list[Raw] = []
        # Without a filter, a page need hold no more than what is still wanted.
        page = stop if stop and not op.filter else None
        for raw in self._items_under(tuple(op.namespace_prefix), page):
            if _expired(raw, now):
                continue
            if op.filter and not _matches(json.loads(raw[VALUE]["S"]), op.filter):
                continue
            matched.append(raw)
            if stop is not None and len(matched) >= stop:
                break
        kept = matched[op.offset : op.offset + op.limit]
        if op.refresh_ttl:
            for raw in kept:
                self._refresh(raw, now)
        return [_search_item(raw) for raw in kept]

    def _items_under(self, prefix: tuple[str, ...], page: int | None) -> Iterator[Raw]:
        """Items of every namespace starting with ``prefix``, in namespace-then-key order."""
        if not prefix:
            # A Scan returns partitions in hash order: sort to give the same order as a Query.
            items = list(self._pages(self.client.scan, {"TableName": self.table_name}))
            yield from sorted(items, key=_order)
            return
        yield from self._pages(self.client.query, _query(self.table_name, prefix, page))

    def _list_namespaces(self, op: ListNamespacesOp, now: float) -> list[tuple[str, ...]]:
        conditions = tuple(op.match_conditions or ())
        literal = _literal_prefix(conditions)
        params: dict[str, Any]
        if literal:
            params = _query(self.table_name, literal, None)
            call = self.client.query
        else:
            params = {"TableName": self.table_name}
            call = self.client.scan
        params["ProjectionExpression"] = "#pk, #sk, #exp"
        params.setdefault("ExpressionAttributeNames", {}).update(
            {"#pk": PK, "#sk": SK, "#exp": EXPIRES_AT}
        )
        namespaces: set[tuple[str, ...]] = set()
        for raw in self._pages(call, params):
            if _expired(raw, now):
                continue
            namespace, _key = split_key(raw[PK]["S"], raw[SK]["S"])
            if all(_does_match(condition, namespace) for condition in conditions):
                namespaces.add(namespace if op.max_depth is None else namespace[: op.max_depth])
        return sorted(namespaces)[op.offset : op.offset + op.limit]

    # --- writes ----------------------------------------------------------------------------

    def _write_request(self, op: PutOp, now: float) -> dict[str, Any]:
        namespace = tuple(op.namespace)
        pk, sk = item_key(namespace, op.key)
        key = {PK: {"S": pk}, SK: {"S": sk}}
        if op.value is None:
            return {"delete": True, "Key": key}
        try:
            text = json.dumps(dict(op.value), ensure_ascii=False, separators=(",", ":"))
        except TypeError as exc:
            raise TypeError(
                f"memory {op.key!r} in namespace {namespace!r}: the value must be JSON "
                f"(dicts, lists, strings, numbers, booleans, null): {exc}"
            ) from exc
        size = len(pk.encode()) + len(sk.encode()) + len(text.encode()) + _ITEM_OVERHEAD_BYTES
        if size > MAX_ITEM_BYTES:
            raise MemoryItemTooLargeError(namespace, op.key, size, MAX_ITEM_BYTES)
        if op.ttl is not None and not (math.isfinite(op.ttl) and op.ttl > 0):
            raise ValueError(
                f"memory {op.key!r} in namespace {namespace!r}: ttl must be a positive number "
                f"of minutes (or None: no expiry), got {op.ttl!r}"
            )
        return {"delete": False, "Key": key, "value": text, "ttl": op.ttl}

    def _write(self, request: dict[str, Any], now: float) -> None:
        if request["delete"]:
            self._call(self.client.delete_item, TableName=self.table_name, Key=request["Key"])
            return
        stamp = _iso(now)
        names = {"#v": VALUE, "#c": CREATED_AT, "#u": UPDATED_AT, "#e": EXPIRES_AT}
        values: dict[str, Any] = {":v": {"S": request["value"]}, ":now": {"S": stamp}}
        ttl = request["ttl"]
        if ttl is not None:
            names["#t"] = TTL_MINUTES
            values[":exp"] = {"N": str(_expiry(now, ttl))}
            values[":ttl"] = {"N": repr(float(ttl))}
            tail = ", #e = :exp, #t = :ttl"
        else:
            names["#t"] = TTL_MINUTES
            tail = " REMOVE #e, #t"
        base = {
            "TableName": self.table_name,
            "Key": request["Key"],
            "ExpressionAttributeNames": names,
        }
        # An update keeps created_at, unless the memory it replaces had expired (DynamoDB may
        # not have deleted it yet): that one is a new memory.
        values[":t0"] = {"N": str(int(now))}
        try:
            self.client.update_item(
                **base,
                UpdateExpression=f"SET #v = :v, #u = :now, #c = if_not_exists(#c, :now){tail}",
                ConditionExpression="attribute_not_exists(#e) OR #e > :t0",
                ExpressionAttributeValues=values,
            )
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise self._wrapped(exc) from exc
        del values[":t0"]
        self._call(
            self.client.update_item,
            **base,
            UpdateExpression=f"SET #v = :v, #u = :now, #c = :now{tail}",
            ExpressionAttributeValues=values,
        )

    def _refresh(self, raw: Raw, now: float) -> None:
        """Push back the expiry of a memory that has a TTL (``refresh_ttl`` reads)."""
        if TTL_MINUTES not in raw:
            return
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={PK: raw[PK], SK: raw[SK]},
                UpdateExpression="SET #e = :exp",
                # Never re-create a memory deleted meanwhile as a fragment.
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames={"#e": EXPIRES_AT, "#pk": PK},
                ExpressionAttributeValues={
                    ":exp": {"N": str(_expiry(now, float(raw[TTL_MINUTES]["N"])))}
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise self._wrapped(exc) from exc

    # --- requests --------------------------------------------------------------------------

    def _batch_get(self, keys: Sequence[ItemKey]) -> Iterator[Raw]:
        """Items of ``keys`` (at most 100), retrying what DynamoDB leaves unprocessed."""
        request: dict[str, Any] | None = {
            self.table_name: {
                "Keys": [{PK: {"S": pk}, SK: {"S": sk}} for pk, sk in keys],
                "ConsistentRead": True,
            }
        }
        for attempt in range(UNPROCESSED_ATTEMPTS + 1):
            if not request:
                return
            if attempt:
                _backoff(attempt)
            response = self._call(self.client.batch_get_item, RequestItems=request)
            yield from response.get("Responses", {}).get(self.table_name, [])
            request = response.get("UnprocessedKeys") or None
        if request:
            # A memory must not read as missing: that would change what the graph does.
            raise MemoryThrottledError(len(request[self.table_name]["Keys"]), UNPROCESSED_ATTEMPTS)

    def _pages(self, call: Callable[..., Any], params: dict[str, Any]) -> Iterator[Raw]:
        params = {**params, "ConsistentRead": True}
        while True:
            response = self._call(call, **params)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _call(self, call: Callable[..., Any], **params: Any) -> Any:
        try:
            return call(**params)
        except ClientError as exc:
            raise self._wrapped(exc) from exc

    def _wrapped(self, exc: ClientError) -> Exception:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return MemoryTableMissingError(self.table_name)
        return exc


# --- keys ------------------------------------------------------------------------------------


def item_key(namespace: Sequence[str], key: str) -> ItemKey:
    """(``pk``, ``sk``) of the memory ``(namespace, key)``; raises if too long for DynamoDB."""
    namespace = tuple(namespace)
    pk = PK_PREFIX + namespace[0]
    sk = _labels(namespace[1:]) + KEY_START + key
    if len(pk.encode()) > MAX_PK_BYTES:
        raise MemoryKeyTooLongError(
            namespace, key, "its first label", len(pk.encode()), MAX_PK_BYTES
        )
    if len(sk.encode()) > MAX_SK_BYTES:
        raise MemoryKeyTooLongError(
            namespace, key, "its further labels and the key", len(sk.encode()), MAX_SK_BYTES
        )
    return pk, sk


def split_key(pk: str, sk: str) -> tuple[tuple[str, ...], str]:
    """The (namespace, key) an item's ``pk`` and ``sk`` stand for."""
    labels, _, key = sk.partition(KEY_START)
    rest = labels.split(LABEL_END)[:-1]
    return (pk[len(PK_PREFIX) :], *rest), key


def _labels(labels: Sequence[str]) -> str:
    return "".join(label + LABEL_END for label in labels)


def _query(table: str, prefix: tuple[str, ...], page: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#pk = :pk",
        "ExpressionAttributeNames": {"#pk": PK},
        "ExpressionAttributeValues": {":pk": {"S": PK_PREFIX + prefix[0]}},
    }
    if len(prefix) > 1:
        params["KeyConditionExpression"] += " AND begins_with(#sk, :sk)"
        params["ExpressionAttributeNames"]["#sk"] = SK
        params["ExpressionAttributeValues"][":sk"] = {"S": _labels(prefix[1:])}
    if page:
        params["Limit"] = page
    return params


def _literal_prefix(conditions: Sequence[MatchCondition]) -> tuple[str, ...]:
    """The labels a prefix condition fixes before its first wildcard (one Query reads them)."""
    for condition in conditions:
        if condition.match_type != "prefix":
            continue
        literal: list[str] = []
        for label in condition.path:
            if label == "*":
                break
            literal.append(label)
        return tuple(literal)
    return ()


def _check_labels(op: Op) -> None:
    if isinstance(op, GetOp | PutOp):
        paths: Sequence[tuple[str, ...]] = (tuple(op.namespace),)
    elif isinstance(op, SearchOp):
        paths = (tuple(op.namespace_prefix),)
    elif isinstance(op, ListNamespacesOp):
        paths = tuple(tuple(c.path) for c in op.match_conditions or ())
    else:
        return
    for path in paths:
        if any(LABEL_END in label or KEY_START in label for label in path):
            raise MemoryLabelError(path)
    if isinstance(op, PutOp) and not op.namespace:
        raise InvalidNamespaceError("Namespace cannot be empty.")


def _order(raw: Raw) -> tuple[str, str]:
    return raw[PK]["S"][len(PK_PREFIX) :], raw[SK]["S"]


# --- items -----------------------------------------------------------------------------------


def _item(raw: Raw) -> Item:
    namespace, key = split_key(raw[PK]["S"], raw[SK]["S"])
    return Item(
        namespace=namespace,
        key=key,
        value=json.loads(raw[VALUE]["S"]),
        created_at=datetime.fromisoformat(raw[CREATED_AT]["S"]),
        updated_at=datetime.fromisoformat(raw[UPDATED_AT]["S"]),
    )


def _search_item(raw: Raw) -> SearchItem:
    item = _item(raw)
    return SearchItem(
        namespace=item.namespace,
        key=item.key,
        value=item.value,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat()


def _expiry(now: float, ttl_minutes: float) -> int:
    # Whole seconds (DynamoDB TTL reads an integer), rounded down: a memory may stop being
    # served up to a second early, never late.
    # DynamoDB numbers hold 38 digits: a TTL of centuries is kept until the end of year 9999.
    return int(min(now + ttl_minutes * 60, _LAST_EXPIRY))


def _expired(raw: Raw, now: float) -> bool:
    expires_at = raw.get(EXPIRES_AT)
    return expires_at is not None and now >= float(expires_at["N"])


def _backoff(attempt: int) -> None:
    delay = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1))
    time.sleep(delay * random.uniform(0.5, 1.0))


# --- filters and namespace conditions, as LangGraph's InMemoryStore applies them -------------


def _matches(value: dict[str, Any], filter: dict[str, Any]) -> bool:
    return all(_compare(value.get(key), wanted) for key, wanted in filter.items())


def _compare(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if any(key.startswith("$") for key in wanted):
            return all(_operator(value, op, operand) for op, operand in wanted.items())
        if not isinstance(value, dict):
            return False
        return all(_compare(value.get(key), inner) for key, inner in wanted.items())
    if isinstance(wanted, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(wanted)
            and all(_compare(v, w) for v, w in zip(value, wanted, strict=True))
        )
    return bool(value == wanted)


def _operator(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    if operator not in ("$gt", "$gte", "$lt", "$lte"):
        raise ValueError(f"Unsupported operator: {operator}")
    # InMemoryStore compares float(value): a missing or non-numeric field raises there; here
    # it does not match, as a JSONB comparison with NULL does not in PostgresStore.
    try:
        left, right = float(value), float(operand)
    except (TypeError, ValueError):
        return False
    if operator == "$gt":
        return left > right
    if operator == "$gte":
        return left >= right
    if operator == "$lt":
        return left < right
    return left <= right


def _does_match(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ValueError(f"Unsupported match type: {condition.match_type}")
    return all(wanted == "*" or label == wanted for label, wanted in pairs)

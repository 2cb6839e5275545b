"""Runtime records in the runtime table: threads, runs, step claims/leases, run endings.

Layout (one table, ``pk``/``sk`` strings, GSI ``gsi1`` on ``gsi1pk``/``gsi1sk``):

| item   | pk              | sk            | gsi1pk              | gsi1sk                    |
|--------|-----------------|---------------|---------------------|---------------------------|
| thread | ``THREAD#<tid>``| ``THREAD``    | ``TENANT#<tenant>`` | ``<created_at>#<tid>``    |
| run    | ``THREAD#<tid>``| ``RUN#<rid>`` | ``LEASE#<shard>`` until its ending is done | ``<lease_until>#<rid>`` |
| api key| ``APIKEY#<sha256>`` | ``APIKEY`` |                     |                           |

Run ids are time-ordered (uuid6), so a thread's runs come back oldest first.

The step claim lives on the run item: ``claimed_step``/``done_step``/``claim_token``/
``lease_until``. A claim is owned: each attempt claims with its own token, and completing,
heart-beating or ending the run needs that token, so a worker overtaken after its lease
expired can change nothing. ``claims`` counts every claim (every attempt, whoever re-sent the
message), ``claims_base`` is its value when the current step began: their difference is how
often the current step has been attempted.

A run's ending is recorded in one write: the final status together with ``ending``, the list
of effects still to do (see ``functions.runs``). The run stays in its ``LEASE#<n>`` partition of
the GSI until its ending is done, so housekeeping finds an ending that was left unfinished.
A handover of a thread between runs (acquire the thread, make the run startable) is one
transaction, never two writes with a gap between them.

Every update refreshes a record's TTL (when retention is on), and reads ignore records past
their TTL that DynamoDB has not removed yet. AWS errors are wrapped into
``InfrastructureError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError

from functions import aws, clock
from functions.errors import InfrastructureError, ItemTooLargeError, NotFoundError
from functions.jsonable import dumps, loads
from functions.resources import Priority

ACTIVE_RUN_STATUSES = ("pending", "running")
LEASE_PARTITION = "LEASE"
# Active runs spread over this many lease-index partitions (``LEASE#<n>``): every step moves
# its run's index entry, and one partition key takes ~1,000 writes/s before it throttles.
LEASE_SHARDS = 10
# A DynamoDB item is at most 400 KB; values larger than this are not copied onto records
# (they stay in the checkpointer and are read from there).
_MAX_VALUES_BYTES = 300_000
# A thread held by ``update_state`` (not by a run) names its holder with this prefix.
STATE_UPDATE_HOLDER = "update_state:"

_ACTIVE = "#st IN (:pending, :running)"
_ACTIVE_VALUES = {":pending": "pending", ":running": "running"}

_deserializer = TypeDeserializer()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _lease_sk(lease_until: float, run_id: str) -> str:
    return f"{lease_until:016.3f}#{run_id}"


def lease_partition(run_id: str) -> str:
    """The lease-index partition of a run (stable: derived from its id)."""
    digest = hashlib.sha256(run_id.encode()).digest()
    return f"{LEASE_PARTITION}#{int.from_bytes(digest[:4], 'big') % LEASE_SHARDS}"


def _thread_pk(thread_id: str) -> str:
    return f"THREAD#{thread_id}"


def _thread_key(thread_id: str) -> dict[str, str]:
    return {"pk": _thread_pk(thread_id), "sk": "THREAD"}


def _run_key(thread_id: str, run_id: str) -> dict[str, str]:
    return {"pk": _thread_pk(thread_id), "sk": f"RUN#{run_id}"}


def _int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)


def _decimal(value: float) -> Decimal:
    return Decimal(str(round(value, 3)))


def _fits(values: Any) -> str | None:
    """``values`` encoded for a record, or None when too large to copy onto one."""
    if values is None:
        return None
    encoded = dumps(values)
    return encoded if len(encoded) <= _MAX_VALUES_BYTES else None


@dataclass
class ThreadRecord:
    thread_id: str
    tenant: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str = "idle"
    values: Any = None
    interrupts: dict[str, Any] = field(default_factory=dict)
    active_run_id: str | None = None
    queued_runs: int = 0
    holder_until: float | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ThreadRecord:
        holder_until = item.get("holder_until")
        return cls(
            thread_id=item["thread_id"],
            tenant=item["tenant"],
            created_at=item["created_at"],
            updated_at=item["updated_at"],
            metadata=loads(item.get("metadata"), {}),
            status=item.get("status", "idle"),
            values=loads(item.get("values"), None),
            interrupts=loads(item.get("interrupts"), {}),
            active_run_id=item.get("active_run_id"),
            queued_runs=_int(item.get("queued_runs")),
            holder_until=None if holder_until is None else float(holder_until),
        )

    @property
    def held_by_run(self) -> bool:
        return bool(self.active_run_id) and not str(self.active_run_id).startswith(
            STATE_UPDATE_HOLDER
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            # As the official server: state changes are what updates a thread here.
            "state_updated_at": self.updated_at,
            "metadata": self.metadata,
            "status": self.status,
            "config": {},
            # null until a run (or update_state) has given the thread values, as officially.
            "values": self.values,
            "interrupts": self.interrupts,
            "error": None,
        }


@dataclass
class Ending:
    """What remains to be done for a run that has reached its final status."""

    thread_status: str
    effects: list[str]
    interrupts: dict[str, Any] = field(default_factory=dict)
    # Whether the run's final values become the thread's values (not for errors/cancels).
    set_values: bool = False
    attempts: int = 0
    # When the run ended (ISO-8601): the run-ended event's ``run_ended_at``.
    ended_at: str = ""

    def to_json(self) -> str:
        return dumps(
            {
                "thread_status": self.thread_status,
                "effects": self.effects,
                "interrupts": self.interrupts,
                "set_values": self.set_values,
                "attempts": self.attempts,
                "ended_at": self.ended_at,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Ending:
        data = loads(text, {})
        return cls(
            thread_status=data.get("thread_status", "idle"),
            effects=list(data.get("effects") or []),
            interrupts=data.get("interrupts") or {},
            set_values=bool(data.get("set_values")),
            attempts=int(data.get("attempts") or 0),
            ended_at=str(data.get("ended_at") or ""),
        )


@dataclass
class RunRecord:
    run_id: str
    thread_id: str
    tenant: str
    assistant_id: str
    status: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any] = field(default_factory=dict)
    multitask_strategy: str = "enqueue"
    priority: Priority = "normal"
    # The run's request: input, command, config, context, checkpoint_id, webhook.
    kwargs: dict[str, Any] = field(default_factory=dict)
    queued: bool = False
    claimed_step: int = 0
    done_step: int = 0
    lease_until: float | None = None
    checkpoint_id: str | None = None
    start_checkpoint_id: str | None = None
    started: bool = False
    cancel: str | None = None
    error: str | None = None
    values: Any = None
    claim_token: str | None = None
    claims: int = 0
    claims_base: int = 0
    # Housekeeping's re-sends of the next step nobody claimed yet (not attempts: the step
    # never ran); reset when a step is done.
    resends: int = 0
    # Steps re-queued for want of model capacity (rate limits, an open breaker).
    deferrals: int = 0
    last_error: str | None = None
    ending: Ending | None = None
    # Model tokens and cost so far (functions/models/usage.py, ``RunUsage.to_json``); {} = none.
    usage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RunRecord:
        lease = item.get("lease_until")
        ending = item.get("ending")
        return cls(
            run_id=item["run_id"],
            thread_id=item["thread_id"],
            tenant=item["tenant"],
            assistant_id=item["assistant_id"],
            status=item["status"],
            created_at=item["created_at"],
            updated_at=item["updated_at"],
            metadata=loads(item.get("metadata"), {}),
            multitask_strategy=item.get("multitask_strategy", "enqueue"),
            priority=item.get("priority", "normal"),
            kwargs=loads(item.get("kwargs"), {}),
            queued=bool(item.get("queued", False)),
            claimed_step=_int(item.get("claimed_step")),
            done_step=_int(item.get("done_step")),
            lease_until=None if lease is None else float(lease),
            checkpoint_id=item.get("checkpoint_id"),
            start_checkpoint_id=item.get("start_checkpoint_id"),
            started=bool(item.get("started", False)),
            cancel=item.get("cancel"),
            error=item.get("error"),
            values=loads(item.get("values"), None),
            claim_token=item.get("claim_token"),
            claims=_int(item.get("claims")),
            claims_base=_int(item.get("claims_base")),
            resends=_int(item.get("resends")),
            deferrals=_int(item.get("deferrals")),
            last_error=item.get("last_error"),
            ending=Ending.from_json(ending) if ending else None,
            usage=loads(item.get("usage"), {}),
        )

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

    @property
    def attempts(self) -> int:
        """How many times the current step has been claimed."""
        return self.claims - self.claims_base

    def to_api(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status,
            "metadata": self.metadata,
            "multitask_strategy": self.multitask_strategy,
            "kwargs": self.kwargs,
            "priority": self.priority,
            "error": self.error,
            # Extension: the run's model tokens and cost (docs/models.md, "Accounting").
            "usage": self.usage or None,
        }


@dataclass
class Claim:
    """The answer to a claim: ``run`` is the record before the claim when ``claimed``, else
    the record as it is (None when the run no longer exists)."""

    claimed: bool
    run: RunRecord | None
    token: str | None = None

    @property
    def attempt(self) -> int:
        """Which attempt at its step this claim is (1 = the first)."""
        if not self.claimed or self.run is None:
            return 0
        return self.run.claims + 1 - self.run.claims_base


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_conditional_failure(exc: ClientError) -> bool:
    return _error_code(exc) == "ConditionalCheckFailedException"


def _is_item_too_large(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    # "Item size has exceeded ..." (put) / "Item size to update has exceeded ..." (update).
    return error.get("Code") == "ValidationException" and "Item size" in str(error.get("Message"))


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item from an error response (low-level attribute values) as the resource API's."""
    if item and all(isinstance(v, dict) and len(v) == 1 for v in item.values()):
        try:
            return {k: _deserializer.deserialize(v) for k, v in item.items()}
        except (TypeError, ValueError):
            return item
    return item


def _claimant_usage(run: RunRecord, token: str | None) -> dict[str, Any] | None:
    """The usage an ending writes: the run's, when the worker owning its step ends it. An
    ending without the claim (a cancel, housekeeping) leaves the stored usage as it is: the
    record it holds may predate the last step's usage."""
    return run.usage if token is not None and run.usage else None


class TransactionCancelled(Exception):
    """A transaction's condition failed; ``reasons`` has one code per item (``"None"`` = ok)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(f"transaction cancelled: {reasons}")
        self.reasons = reasons


class Store:
    """Data access for the runtime table; the only module that talks to it."""

    def __init__(self, table_name: str, *, ttl_days: int = 0) -> None:
        self._table = aws.table(table_name)
        self._table_name = table_name
        self._ttl_days = ttl_days

    # --- helpers -----------------------------------------------------------------------

    def _ttl(self) -> dict[str, Any]:
        if not self._ttl_days:
            return {}
        return {"ttl": int(clock.now()) + self._ttl_days * 86400}

    def _live(self, item: dict[str, Any] | None) -> dict[str, Any] | None:
        """The item, or None if it is past its TTL (DynamoDB removes such items only
        eventually, up to days later)."""
        if not item:
            return None
        ttl = item.get("ttl")
        if ttl is not None and float(ttl) < clock.now():
            return None
        return item

    def _update_expression(
        self,
        sets: list[str],
        values: dict[str, Any],
        *,
        remove: tuple[str, ...] = (),
        add: tuple[str, ...] = (),
    ) -> str:
        """``SET ... REMOVE ... ADD ...``; the record's TTL moves with every update."""
        sets = list(sets)
        ttl = self._ttl()
        if ttl:
            sets.append("#ttl = :ttl")
            values[":ttl"] = ttl["ttl"]
        expr = "SET " + ", ".join(sets)
        if remove:
            expr += " REMOVE " + ", ".join(remove)
        if add:
            expr += " ADD " + ", ".join(add)
        return expr

    @staticmethod
    def _names(expr: str, condition: str, names: dict[str, str]) -> dict[str, str]:
        text = expr + " " + condition
        wanted = {
            "#st": "status",
            "#ttl": "ttl",
            "#v": "values",
            "#err": "error",
            "#usage": "usage",
            **names,
        }
        return {k: v for k, v in wanted.items() if k in text}

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            # The caller reads these (which condition failed); everything else is wrapped.
            if _is_conditional_failure(exc) or _error_code(exc) == "TransactionCanceledException":
                raise
            if _is_item_too_large(exc):
                raise ItemTooLargeError(
                    "The record is too large to store (DynamoDB items are at most 400 KB): "
                    "send less metadata or a smaller input."
                ) from exc
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc

    def _update(
        self,
        key: dict[str, str],
        sets: list[str],
        values: dict[str, Any],
        *,
        condition: str | None = None,
        remove: tuple[str, ...] = (),
        add: tuple[str, ...] = (),
        names: dict[str, str] | None = None,
        returns: str = "ALL_NEW",
    ) -> tuple[bool, dict[str, Any] | None]:
        """One UpdateItem: ``(True, new or updated attributes)``, or ``(False, the item as it
        is)`` when ``condition`` failed (None if the item does not exist)."""
        expr = self._update_expression(sets, values, remove=remove, add=add)
        kwargs: dict[str, Any] = {
            "Key": key,
            "UpdateExpression": expr,
            "ExpressionAttributeValues": values,
            "ReturnValues": returns,
        }
        attribute_names = self._names(expr, condition or "", names or {})
        if attribute_names:
            kwargs["ExpressionAttributeNames"] = attribute_names
        if condition:
            kwargs["ConditionExpression"] = condition
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            response = self._call(self._table.update_item, **kwargs)
        except ClientError as exc:
            if _is_conditional_failure(exc):
                item: Any = exc.response.get("Item")
                return False, self._live(_plain(item)) if item else None
            raise  # pragma: no cover - _call wraps everything else
        return True, dict(response.get("Attributes") or {})

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """TransactWriteItems of ``{"Update"|"Put": {...}}`` in plain values; raises
        ``TransactionCancelled`` when a condition failed."""
        # The resource's client serializes plain values itself (boto3's transformation
        # injector), exactly as for the Table calls.
        entries = [
            {kind: {"TableName": self._table_name, **params}}
            for entry in items
            for kind, params in entry.items()
        ]
        client = aws.dynamodb_resource().meta.client
        try:
            self._call(client.transact_write_items, TransactItems=entries)
        except ClientError as exc:
            # ``_call`` wrapped every other error; this one says which condition failed.
            reasons = [
                str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])
            ]
            if any(r not in ("None", "ConditionalCheckFailed") for r in reasons):
                raise InfrastructureError(f"DynamoDB transaction failed: {exc}") from exc
            raise TransactionCancelled(reasons) from exc

    def _transact_update(
        self,
        key: dict[str, str],
        sets: list[str],
        values: dict[str, Any],
        *,
        condition: str,
        remove: tuple[str, ...] = (),
        add: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """An ``Update`` entry for ``_transact`` (with the TTL refreshed)."""
        expr = self._update_expression(sets, values, remove=remove, add=add)
        params: dict[str, Any] = {
            "Key": key,
            "UpdateExpression": expr,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        attribute_names = self._names(expr, condition, {})
        if attribute_names:
            params["ExpressionAttributeNames"] = attribute_names
        return {"Update": params}

    # --- threads -------------------------------------------------------------------------

    def put_thread(self, thread: ThreadRecord, *, if_absent: bool) -> bool:
        """Create a thread; False when ``if_absent`` and it already exists."""
        item = {
            **_thread_key(thread.thread_id),
            "thread_id": thread.thread_id,
            "tenant": thread.tenant,
            "created_at": thread.created_at,
            "updated_at": thread.updated_at,
            "metadata": dumps(thread.metadata),
            "status": thread.status,
            "interrupts": dumps(thread.interrupts),
            "gsi1pk": f"TENANT#{thread.tenant}",
            "gsi1sk": f"{thread.created_at}#{thread.thread_id}",
            **self._ttl(),
        }
        kwargs: dict[str, Any] = {"Item": item}
        if if_absent:
            # A record past its TTL that DynamoDB has not removed yet counts as absent.
            kwargs["ConditionExpression"] = "attribute_not_exists(pk) OR #ttl < :now"
            kwargs["ExpressionAttributeNames"] = {"#ttl": "ttl"}
            kwargs["ExpressionAttributeValues"] = {":now": int(clock.now())}
        try:
            self._call(self._table.put_item, **kwargs)
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return False
            raise  # pragma: no cover
        return True

    def get_thread(self, thread_id: str) -> ThreadRecord | None:
        response = self._call(self._table.get_item, Key=_thread_key(thread_id), ConsistentRead=True)
        item = self._live(response.get("Item"))
        return ThreadRecord.from_item(item) if item else None

    def update_thread_metadata(self, thread_id: str, metadata: dict[str, Any]) -> ThreadRecord:
        done, attributes = self._update(
            _thread_key(thread_id),
            ["metadata = :m", "updated_at = :u"],
            {":m": dumps(metadata), ":u": now_iso()},
            condition="attribute_exists(pk)",
        )
        if not done or not attributes:
            raise NotFoundError(f"Thread {thread_id!r} not found.")
        return ThreadRecord.from_item(attributes)

    def _thread_state_sets(
        self, status: str, values: Any, interrupts: dict[str, Any] | None, vals: dict[str, Any]
    ) -> list[str]:
        sets = ["#st = :s", "updated_at = :u", "interrupts = :i"]
        vals.update({":s": status, ":u": now_iso(), ":i": dumps(interrupts or {})})
        encoded = _fits(values)
        if encoded is not None:
            sets.append("#v = :v")
            vals[":v"] = encoded
        return sets

    def acquire_for_update(self, thread_id: str, holder: str, hold_s: float) -> bool:
        """Hold a free thread for a state update (not a run) for at most ``hold_s``."""
        now = clock.now()
        done, _ = self._update(
            _thread_key(thread_id),
            ["active_run_id = :h", "holder_until = :hu"],
            {":h": holder, ":hu": _decimal(now + hold_s), ":now": _decimal(now)},
            condition=(
                "attribute_exists(pk) AND (attribute_not_exists(active_run_id) "
                "OR holder_until < :now)"
            ),
            returns="NONE",
        )
        return done

    def release_update_hold(
        self,
        thread_id: str,
        holder: str,
        *,
        status: str,
        values: Any = None,
        interrupts: dict[str, Any] | None = None,
    ) -> ThreadRecord | None:
        """The state update is written: record the thread's state and free it; the thread,
        or None if the hold had been lost."""
        vals: dict[str, Any] = {":h": holder}
        sets = self._thread_state_sets(status, values, interrupts, vals)
        done, attributes = self._update(
            _thread_key(thread_id),
            sets,
            vals,
            condition="active_run_id = :h",
            remove=("active_run_id", "holder_until"),
        )
        return ThreadRecord.from_item(attributes) if done and attributes else None

    def release_thread(
        self,
        thread_id: str,
        holder: str,
        *,
        status: str,
        values: Any = None,
        interrupts: dict[str, Any] | None = None,
    ) -> ThreadRecord | None:
        """The holder's run ended: record the thread's status and values and free it.

        Only the holder releases: None (nothing changed) when ``holder`` does not hold it
        (it was released already, or never held it)."""
        vals: dict[str, Any] = {":r": holder}
        sets = self._thread_state_sets(status, values, interrupts, vals)
        done, attributes = self._update(
            _thread_key(thread_id),
            sets,
            vals,
            condition="active_run_id = :r",
            remove=("active_run_id", "holder_until"),
        )
        return ThreadRecord.from_item(attributes) if done and attributes else None

    def search_threads(self, tenant: str) -> Iterator[ThreadRecord]:
        kwargs: dict[str, Any] = {
            "IndexName": "gsi1",
            "KeyConditionExpression": Key("gsi1pk").eq(f"TENANT#{tenant}"),
        }
        while True:
            response = self._call(self._table.query, **kwargs)
            for item in response.get("Items", []):
                # The GSI is eventually consistent and projects all attributes.
                if self._live(item):
                    yield ThreadRecord.from_item(item)
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def delete_thread(self, thread_id: str) -> None:
        keys = [
            {"pk": item["pk"], "sk": item["sk"]}
            for item in self._query_partition(thread_id, projection=True)
        ]
        try:
            with self._table.batch_writer() as batch:
                for key in keys:
                    batch.delete_item(Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise InfrastructureError(f"DynamoDB batch delete failed: {exc}") from exc

    def _query_partition(
        self, thread_id: str, *, prefix: str | None = None, projection: bool = False
    ) -> Iterator[dict[str, Any]]:
        condition: Any = Key("pk").eq(_thread_pk(thread_id))
        if prefix:
            condition = condition & Key("sk").begins_with(prefix)
        kwargs: dict[str, Any] = {"KeyConditionExpression": condition, "ConsistentRead": True}
        if projection:
            kwargs["ProjectionExpression"] = "pk, sk"
        while True:
            response = self._call(self._table.query, **kwargs)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # --- runs: creation and handover ---------------------------------------------------

    def _run_item(self, run: RunRecord) -> dict[str, Any]:
        item: dict[str, Any] = {
            **_run_key(run.thread_id, run.run_id),
            "run_id": run.run_id,
            "thread_id": run.thread_id,
            "tenant": run.tenant,
            "assistant_id": run.assistant_id,
            "status": run.status,
            "created_at": run.created_at,
            "updated_at": run.updated_at,
            "metadata": dumps(run.metadata),
            "multitask_strategy": run.multitask_strategy,
            "priority": run.priority,
            "kwargs": dumps(run.kwargs),
            "queued": run.queued,
            "claimed_step": 0,
            "done_step": 0,
            "claims": 0,
            "claims_base": 0,
            **self._ttl(),
        }
        if run.lease_until is not None:
            item["lease_until"] = _decimal(run.lease_until)
            item["gsi1pk"] = lease_partition(run.run_id)
            item["gsi1sk"] = _lease_sk(run.lease_until, run.run_id)
        if run.checkpoint_id:
            item["checkpoint_id"] = run.checkpoint_id
        return item

    def put_run(self, run: RunRecord) -> None:
        """Store a run record as it is (tests and tools; the API uses ``create_run``)."""
        self._call(self._table.put_item, Item=self._run_item(run))

    def create_run(self, run: RunRecord) -> bool:
        """Store a new run that holds its thread, in one transaction: True; False (nothing
        stored) when another run holds the thread. NotFoundError if the thread is gone."""
        put = {
            "Put": {
                "Item": self._run_item(run),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        acquire = self._transact_update(
            _thread_key(run.thread_id),
            ["active_run_id = :r", "#st = :busy", "updated_at = :u"],
            {":r": run.run_id, ":busy": "busy", ":u": now_iso()},
            # The same run again (a retry whose first answer was lost) is not a conflict.
            condition=(
                "attribute_exists(pk) AND (attribute_not_exists(active_run_id) "
                "OR active_run_id = :r)"
            ),
        )
        try:
            self._transact([acquire, put])
        except TransactionCancelled as exc:
            if exc.reasons[0] == "None" and exc.reasons[1] == "ConditionalCheckFailed":
                return True  # both were written by the first attempt of this request
            if self.get_thread(run.thread_id) is None:
                raise NotFoundError(f"Thread {run.thread_id!r} not found.") from exc
            return False
        return True

    def create_queued_run(self, run: RunRecord, *, cancel: tuple[str, str] | None = None) -> bool:
        """Store a new run waiting behind the thread's holder, counting it on the thread in
        the same transaction (the count spares a run's ending a query when nothing waits).

        ``cancel`` = (active run id, action): the multitask strategy's cancel of the active
        run is flagged in the same transaction, so a crash right after cannot leave the old
        run going. False if that run was no longer active (nothing stored; call again
        without ``cancel``)."""
        put = {
            "Put": {
                "Item": self._run_item(run),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        count = self._transact_update(
            _thread_key(run.thread_id),
            ["updated_at = :u"],
            {":u": now_iso(), ":one": 1},
            condition="attribute_exists(pk)",
            add=("queued_runs :one",),
        )
        items = [count, put]
        if cancel is not None:
            items.append(
                self._transact_update(
                    _run_key(run.thread_id, cancel[0]),
                    ["cancel = :a", "updated_at = :u"],
                    {":a": cancel[1], ":u": now_iso(), **_ACTIVE_VALUES},
                    condition=_ACTIVE,
                )
            )
        try:
            self._transact(items)
        except TransactionCancelled as exc:
            if exc.reasons[1] == "ConditionalCheckFailed":
                return True  # stored by the first attempt of this request
            if exc.reasons[0] == "ConditionalCheckFailed":
                raise NotFoundError(f"Thread {run.thread_id!r} not found.") from exc
            return False
        return True

    def hand_over(self, thread_id: str, run_id: str, lease_until: float) -> bool:
        """Make a queued run the holder of a free thread and startable, in one transaction:
        there is never a thread held by a run still queued. False if the thread is held or
        the run is no longer waiting (cancelled)."""
        acquire = self._transact_update(
            _thread_key(thread_id),
            ["active_run_id = :r", "#st = :busy", "updated_at = :u"],
            {":r": run_id, ":busy": "busy", ":u": now_iso(), ":minus": -1},
            condition="attribute_exists(pk) AND attribute_not_exists(active_run_id)",
            add=("queued_runs :minus",),
        )
        start = self._transact_update(
            _run_key(thread_id, run_id),
            ["queued = :f", "lease_until = :l", "gsi1pk = :gp", "gsi1sk = :gs", "updated_at = :u"],
            {
                ":f": False,
                ":t": True,
                ":pending": "pending",
                ":l": _decimal(lease_until),
                ":gp": lease_partition(run_id),
                ":gs": _lease_sk(lease_until, run_id),
                ":u": now_iso(),
            },
            condition="queued = :t AND #st = :pending",
        )
        try:
            self._transact([acquire, start])
        except TransactionCancelled:
            thread = self.get_thread(thread_id)
            # Our first attempt went through and its answer was lost: it is ours.
            return thread is not None and thread.active_run_id == run_id
        return True

    # --- runs: reading -------------------------------------------------------------------

    def get_run(self, thread_id: str, run_id: str) -> RunRecord | None:
        response = self._call(
            self._table.get_item, Key=_run_key(thread_id, run_id), ConsistentRead=True
        )
        item = self._live(response.get("Item"))
        return RunRecord.from_item(item) if item else None

    def list_runs(self, thread_id: str) -> list[RunRecord]:
        return [
            RunRecord.from_item(i)
            for i in self._query_partition(thread_id, prefix="RUN#")
            if self._live(i)
        ]

    def delete_run(self, thread_id: str, run_id: str) -> None:
        self._call(self._table.delete_item, Key=_run_key(thread_id, run_id))

    def expired_leases(
        self,
        now: float,
        shard: int,
        *,
        limit: int = 100,
        start_key: dict[str, Any] | None = None,
    ) -> tuple[list[RunRecord], dict[str, Any] | None]:
        """Runs of lease shard ``shard`` whose deadline passed before ``now``, oldest first,
        one page: (runs, the key to continue from or None)."""
        kwargs: dict[str, Any] = {
            "IndexName": "gsi1",
            "KeyConditionExpression": Key("gsi1pk").eq(f"{LEASE_PARTITION}#{shard}")
            & Key("gsi1sk").lt(f"{now:016.3f}"),
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        response = self._call(self._table.query, **kwargs)
        runs = [RunRecord.from_item(i) for i in response.get("Items", []) if self._live(i)]
        return runs, response.get("LastEvaluatedKey")

    # --- runs: steps ---------------------------------------------------------------------

    def claim_step(
        self, thread_id: str, run_id: str, step: int, lease_until: float, token: str
    ) -> Claim:
        """Claim step ``step`` of a run with ``token``.

        The claim succeeds when the previous step is done and nobody owns this step: it was
        never claimed, its claim was given up, or its lease expired (its worker is dead:
        leases outlive the function timeout). Counts the attempt. The answer carries the
        record before the claim (cancellation and retries need no extra read) or, when the
        claim failed, the record as it is (a final run with an unfinished ending, say).
        """
        now = clock.now()
        done, attributes = self._update(
            _run_key(thread_id, run_id),
            [
                "claimed_step = :n",
                "lease_until = :l",
                "#st = :running",
                "updated_at = :u",
                "gsi1pk = :gp",
                "gsi1sk = :gs",
                "claim_token = :tok",
            ],
            {
                ":n": step,
                ":prev": step - 1,
                ":l": _decimal(lease_until),
                ":now": _decimal(now),
                ":f": False,
                ":u": now_iso(),
                ":gp": lease_partition(run_id),
                ":gs": _lease_sk(lease_until, run_id),
                ":tok": token,
                ":one": 1,
                **_ACTIVE_VALUES,
            },
            condition=(
                f"{_ACTIVE} AND queued = :f AND done_step = :prev AND (claimed_step < :n "
                "OR attribute_not_exists(claim_token) OR lease_until < :now)"
            ),
            add=("claims :one",),
            # The old image tells a first attempt (claimed_step < step) from a retry.
            returns="ALL_OLD",
        )
        run = RunRecord.from_item(attributes) if attributes else None
        return Claim(done, run, token if done else None)

    def heartbeat(self, thread_id: str, run_id: str, token: str, lease_until: float) -> bool:
        """Extend a live claim's lease; False if the claim is no longer ours."""
        done, _ = self._update(
            _run_key(thread_id, run_id),
            ["lease_until = :l", "gsi1sk = :gs"],
            {
                ":l": _decimal(lease_until),
                ":gs": _lease_sk(lease_until, run_id),
                ":tok": token,
                **_ACTIVE_VALUES,
            },
            condition=f"{_ACTIVE} AND claim_token = :tok",
            returns="NONE",
        )
        return done

    def complete_step(
        self,
        thread_id: str,
        run_id: str,
        step: int,
        *,
        token: str,
        checkpoint_id: str | None,
        start_checkpoint_id: str | None,
        first_step: bool,
        deadline: float,
        usage: dict[str, Any] | None = None,
    ) -> tuple[bool, RunRecord | None]:
        """Record a finished (non-final) step: ``(True, record)``, the record showing a
        pending cancel; ``(False, record as it is or None)`` when the claim is not ours.

        ``deadline`` is when housekeeping should re-send the next step message if no worker
        has claimed it by then.
        """
        sets = [
            "done_step = :n",
            "lease_until = :l",
            "gsi1sk = :gs",
            "updated_at = :u",
            "claims_base = claims",
        ]
        values: dict[str, Any] = {
            ":n": step,
            ":l": _decimal(deadline),
            ":gs": _lease_sk(deadline, run_id),
            ":u": now_iso(),
            ":tok": token,
            ":running": "running",
        }
        if checkpoint_id:
            sets.append("checkpoint_id = :c")
            values[":c"] = checkpoint_id
        if first_step and start_checkpoint_id:
            sets.append("start_checkpoint_id = :sc")
            values[":sc"] = start_checkpoint_id
        if first_step:
            sets.append("started = :t")
            values[":t"] = True
        if usage:
            sets.append("#usage = :usage")
            values[":usage"] = dumps(usage)
        done, attributes = self._update(
            _run_key(thread_id, run_id),
            sets,
            values,
            condition="#st = :running AND claimed_step = :n AND claim_token = :tok",
            remove=("claim_token", "last_error", "resends"),
        )
        return done, RunRecord.from_item(attributes) if attributes else None

    def release_claim(
        self,
        thread_id: str,
        run_id: str,
        token: str,
        error: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Give up our claim (the step failed and will be retried), noting why: the next
        delivery can claim the step at once. ``usage``: the run's model usage including what
        the failed attempt spent (its tokens were paid for)."""
        sets = ["last_error = :e", "updated_at = :u"]
        values: dict[str, Any] = {":e": error[:2000], ":u": now_iso(), ":tok": token}
        if usage:
            sets.append("#usage = :usage")
            values[":usage"] = dumps(usage)
        self._update(
            _run_key(thread_id, run_id),
            sets,
            {**values, **_ACTIVE_VALUES},
            condition=f"{_ACTIVE} AND claim_token = :tok",
            remove=("claim_token",),
            returns="NONE",
        )

    def defer_step(
        self,
        thread_id: str,
        run_id: str,
        token: str,
        *,
        reason: str,
        resend_at: float,
        usage: dict[str, Any] | None = None,
    ) -> bool:
        """Give up our claim because a model had no capacity: the step is tried again later
        and this attempt is not counted (``claims_base`` moves with ``claims``). Housekeeping
        re-sends the step if no worker has claimed it by ``resend_at``. False if the claim
        is no longer ours."""
        sets = ["last_error = :e", "updated_at = :u", "lease_until = :l", "gsi1sk = :gs"]
        values: dict[str, Any] = {
            ":e": reason[:2000],
            ":u": now_iso(),
            ":l": _decimal(resend_at),
            ":gs": _lease_sk(resend_at, run_id),
            ":tok": token,
            ":one": 1,
            **_ACTIVE_VALUES,
        }
        if usage:
            sets.append("#usage = :usage")
            values[":usage"] = dumps(usage)
        done, _ = self._update(
            _run_key(thread_id, run_id),
            sets,
            values,
            condition=f"{_ACTIVE} AND claim_token = :tok",
            remove=("claim_token",),
            add=("claims_base :one", "deferrals :one"),
            returns="NONE",
        )
        return done

    def take_over(self, run: RunRecord, now: float, deadline: float) -> bool:
        """Housekeeping: free the claim of a step whose lease expired (its worker is dead),
        so the re-sent message can claim it; the run waits for that claim until
        ``deadline``."""
        values: dict[str, Any] = {
            ":l": _decimal(deadline),
            ":gs": _lease_sk(deadline, run.run_id),
            ":now": _decimal(now),
            ":n": run.claimed_step,
            **_ACTIVE_VALUES,
        }
        condition = f"{_ACTIVE} AND claimed_step = :n AND lease_until < :now"
        if run.claim_token:
            values[":tok"] = run.claim_token
            condition += " AND claim_token = :tok"
        else:
            condition += " AND attribute_not_exists(claim_token)"
        done, _ = self._update(
            _run_key(run.thread_id, run.run_id),
            ["lease_until = :l", "gsi1sk = :gs"],
            values,
            condition=condition,
            remove=("claim_token",),
            returns="NONE",
        )
        return done

    def note_resend(self, run: RunRecord, now: float, deadline: float) -> bool:
        """Housekeeping re-sends a step nobody claimed: count the re-send (not an attempt: the
        step never ran; a message waiting in a long backlog is re-sent too) and give the
        re-sent message until ``deadline``. False if the run moved on meanwhile or another
        pass re-sent it first."""
        done, _ = self._update(
            _run_key(run.thread_id, run.run_id),
            ["lease_until = :l", "gsi1sk = :gs"],
            {
                ":l": _decimal(deadline),
                ":gs": _lease_sk(deadline, run.run_id),
                ":n": run.done_step,
                ":now": _decimal(now),
                ":one": 1,
                **_ACTIVE_VALUES,
            },
            condition=(
                f"{_ACTIVE} AND done_step = :n AND claimed_step = :n AND lease_until < :now"
            ),
            add=("resends :one",),
            returns="NONE",
        )
        return done

    def extend_lease(self, thread_id: str, run_id: str, lease_until: float) -> None:
        """Move an active run's deadline (housekeeping: a queued run behind a live holder)."""
        self._update(
            _run_key(thread_id, run_id),
            ["lease_until = :l", "gsi1sk = :gs"],
            {":l": _decimal(lease_until), ":gs": _lease_sk(lease_until, run_id), **_ACTIVE_VALUES},
            condition=_ACTIVE,
            returns="NONE",
        )

    def request_cancel(self, thread_id: str, run_id: str, action: str) -> RunRecord | None:
        """Flag an active run for cancellation at its next step boundary."""
        done, attributes = self._update(
            _run_key(thread_id, run_id),
            ["cancel = :a", "updated_at = :u"],
            {":a": action, ":u": now_iso(), **_ACTIVE_VALUES},
            condition=_ACTIVE,
        )
        return RunRecord.from_item(attributes) if done and attributes else None

    # --- runs: endings -------------------------------------------------------------------

    def _ending_update(
        self,
        run: RunRecord,
        status: str,
        ending: Ending,
        *,
        error: str | None,
        values: Any,
        cancel: str | None,
        recheck_at: float,
        usage: dict[str, Any] | None = None,
    ) -> tuple[list[str], dict[str, Any]]:
        sets = [
            "#st = :s",
            "updated_at = :u",
            "ending = :end",
            "lease_until = :l",
            "gsi1pk = :gp",
            "gsi1sk = :gs",
        ]
        vals: dict[str, Any] = {
            ":s": status,
            ":u": now_iso(),
            ":end": ending.to_json(),
            ":l": _decimal(recheck_at),
            ":gp": lease_partition(run.run_id),
            ":gs": _lease_sk(recheck_at, run.run_id),
        }
        if error is not None:
            sets.append("#err = :e")
            vals[":e"] = error
        encoded = _fits(values)
        if encoded is not None:
            sets.append("#v = :v")
            vals[":v"] = encoded
        if cancel is not None:
            sets.append("cancel = :cancel")
            vals[":cancel"] = cancel
        if usage:
            sets.append("#usage = :usage")
            vals[":usage"] = dumps(usage)
        return sets, vals

    def record_ending(
        self,
        run: RunRecord,
        status: str,
        ending: Ending,
        *,
        token: str | None,
        error: str | None = None,
        values: Any = None,
        cancel: str | None = None,
        now: float,
        recheck_at: float,
    ) -> tuple[bool, RunRecord | None]:
        """Move an active run to its final status together with what remains to be done:
        ``(True, record)``; ``(False, record as it is or None)`` if the run was not ours to
        end.

        With ``token`` only the worker owning the current claim can end it; without one
        (a cancel, housekeeping) only a run with no step in progress can: unclaimed, or
        its claim's lease expired. ``recheck_at``: when housekeeping finishes the ending
        if it is still not done.
        """
        sets, vals = self._ending_update(
            run,
            status,
            ending,
            error=error,
            values=values,
            cancel=cancel,
            recheck_at=recheck_at,
            usage=_claimant_usage(run, token),
        )
        vals.update(_ACTIVE_VALUES)
        vals[":f"] = False
        if token is not None:
            vals[":tok"] = token
            condition = f"{_ACTIVE} AND queued = :f AND claim_token = :tok"
        else:
            vals[":now"] = _decimal(now)
            condition = (
                f"{_ACTIVE} AND queued = :f AND "
                "(attribute_not_exists(claim_token) OR lease_until < :now)"
            )
        done, attributes = self._update(
            _run_key(run.thread_id, run.run_id),
            sets,
            vals,
            condition=condition,
            remove=("claim_token",),
        )
        return done, RunRecord.from_item(attributes) if attributes else None

    def end_at_once(
        self,
        run: RunRecord,
        status: str,
        ending: Ending,
        *,
        token: str | None,
        error: str | None,
        values: Any,
        thread_values: Any,
        now: float,
        remaining: Ending | None = None,
        recheck_at: float | None = None,
    ) -> bool:
        """The common ending in one transaction: the run's final status and the release of
        its thread, when no run waits queued on the thread. False, with nothing written,
        when that does not apply; the caller then records the ending. ``remaining``: the
        effects left after the release (the run-ended event), recorded in the same write
        with ``recheck_at`` for housekeeping; None: nothing is left."""
        sets, vals = self._ending_update(
            run,
            status,
            remaining or ending,
            error=error,
            values=values,
            cancel=None,
            recheck_at=recheck_at if recheck_at is not None else now,
            usage=_claimant_usage(run, token),
        )
        if remaining is None:
            sets = [x for x in sets if not x.startswith(("ending", "lease_until", "gsi1"))]
            for key in (":end", ":l", ":gp", ":gs"):
                vals.pop(key, None)
        vals.update({**_ACTIVE_VALUES, ":f": False})
        if token is not None:
            vals[":tok"] = token
            condition = f"{_ACTIVE} AND queued = :f AND claim_token = :tok"
        else:
            vals[":now"] = _decimal(now)
            condition = (
                f"{_ACTIVE} AND queued = :f AND "
                "(attribute_not_exists(claim_token) OR lease_until < :now)"
            )
        end = self._transact_update(
            _run_key(run.thread_id, run.run_id),
            sets,
            vals,
            condition=condition,
            remove=("claim_token",)
            if remaining is not None
            else ("claim_token", "lease_until", "gsi1pk", "gsi1sk"),
        )
        thread_vals: dict[str, Any] = {":r": run.run_id, ":one": 1}
        thread_sets = self._thread_state_sets(
            ending.thread_status, thread_values, ending.interrupts, thread_vals
        )
        release = self._transact_update(
            _thread_key(run.thread_id),
            thread_sets,
            thread_vals,
            condition=(
                "active_run_id = :r AND (attribute_not_exists(queued_runs) OR queued_runs < :one)"
            ),
            remove=("active_run_id", "holder_until"),
        )
        try:
            self._transact([end, release])
        except TransactionCancelled:
            return False
        return True

    def end_queued_run(
        self, run: RunRecord, status: str, ending: Ending, *, cancel: str | None, recheck_at: float
    ) -> RunRecord | None:
        """End a run still waiting queued (a cancel), uncounting it on the thread in the
        same transaction; None if it was no longer waiting."""
        sets, vals = self._ending_update(
            run, status, ending, error=None, values=None, cancel=cancel, recheck_at=recheck_at
        )
        vals.update({":t": True, ":pending": "pending"})
        end = self._transact_update(
            _run_key(run.thread_id, run.run_id),
            sets,
            vals,
            condition="queued = :t AND #st = :pending",
        )
        uncount = self._transact_update(
            _thread_key(run.thread_id),
            ["updated_at = :u"],
            {":u": now_iso(), ":minus": -1},
            condition="attribute_exists(pk)",
            add=("queued_runs :minus",),
        )
        try:
            self._transact([end, uncount])
        except TransactionCancelled:
            return None
        return self.get_run(run.thread_id, run.run_id)

    def note_ending_attempt(self, run: RunRecord, recheck_at: float) -> Ending | None:
        """Count one more attempt at an unfinished ending (and push its recheck time); the
        ending as it is now, or None if it is done."""
        if run.ending is None:
            return None
        ending = Ending(**{**run.ending.__dict__, "attempts": run.ending.attempts + 1})
        done, attributes = self._update(
            _run_key(run.thread_id, run.run_id),
            ["ending = :end", "lease_until = :l", "gsi1sk = :gs"],
            {
                ":end": ending.to_json(),
                ":l": _decimal(recheck_at),
                ":gs": _lease_sk(recheck_at, run.run_id),
                ":old": run.ending.to_json(),
            },
            condition="ending = :old",
        )
        if done:
            return ending
        if attributes and attributes.get("ending"):
            return Ending.from_json(str(attributes["ending"]))
        return None

    def leave_index(self, run: RunRecord) -> None:
        """Take a final run with nothing left to do out of the housekeeping index."""
        self._update(
            _run_key(run.thread_id, run.run_id),
            ["updated_at = :u"],
            {":u": now_iso()},
            condition="attribute_exists(pk)",
            remove=("lease_until", "gsi1pk", "gsi1sk"),
            returns="NONE",
        )

    def mark_ended(self, run: RunRecord) -> None:
        """Every effect of the run's ending is done: it leaves the housekeeping index."""
        self._update(
            _run_key(run.thread_id, run.run_id),
            ["updated_at = :u"],
            {":u": now_iso()},
            condition="attribute_exists(ending)",
            remove=("ending", "lease_until", "gsi1pk", "gsi1sk"),
            returns="NONE",
        )

    # --- api keys ------------------------------------------------------------------------

    def tenant_for_key_hash(self, key_hash: str) -> str | None:
        response = self._call(
            self._table.get_item, Key={"pk": f"APIKEY#{key_hash}", "sk": "APIKEY"}
        )
        item = response.get("Item")
        return None if item is None else str(item.get("tenant", key_hash[:16]))

    def put_api_key(self, key_hash: str, tenant: str) -> None:
        self._call(
            self._table.put_item,
            Item={
                "pk": f"APIKEY#{key_hash}",
                "sk": "APIKEY",
                "tenant": tenant,
                "created_at": now_iso(),
            },
        )

"""Runtime records in the runtime table: threads, runs, step claims/leases.

Layout (one table, ``pk``/``sk`` strings, GSI ``gsi1`` on ``gsi1pk``/``gsi1sk``):

| item   | pk              | sk            | gsi1pk              | gsi1sk                    |
|--------|-----------------|---------------|---------------------|---------------------------|
| thread | ``THREAD#<tid>``| ``THREAD``    | ``TENANT#<tenant>`` | ``<created_at>#<tid>``    |
| run    | ``THREAD#<tid>``| ``RUN#<rid>`` | ``LEASE`` while active | ``<lease_until>#<rid>``|
| api key| ``APIKEY#<sha256>`` | ``APIKEY`` |                     |                           |

Run ids are time-ordered (uuid6), so a thread's runs come back oldest first. The step claim
lives on the run item itself: ``claimed_step``/``done_step``/``lease_until`` and a
conditional update make a step exactly-once in effect (see ``claim_step``). Active runs sit in
the ``LEASE`` partition of the GSI keyed by the time by which progress is expected;
housekeeping queries it for runs whose lease expired. AWS errors are wrapped into
``InfrastructureError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError

from functions import aws, clock
from functions.errors import InfrastructureError, ItemTooLargeError
from functions.jsonable import dumps, loads
from functions.resources import Priority

ACTIVE_RUN_STATUSES = ("pending", "running")
LEASE_PARTITION = "LEASE"
# A DynamoDB item is at most 400 KB; values larger than this are not copied onto records
# (they stay in the checkpointer and are read from there).
_MAX_VALUES_BYTES = 300_000


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _lease_sk(lease_until: float, run_id: str) -> str:
    return f"{lease_until:016.3f}#{run_id}"


def _thread_pk(thread_id: str) -> str:
    return f"THREAD#{thread_id}"


def _int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)


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

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ThreadRecord:
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

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RunRecord:
        lease = item.get("lease_until")
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
        )

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

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
        }


def _is_conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _is_item_too_large(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    # "Item size has exceeded ..." (put) / "Item size to update has exceeded ..." (update).
    return error.get("Code") == "ValidationException" and "Item size" in str(error.get("Message"))


class Store:
    """Data access for the runtime table; the only module that talks to it."""

    def __init__(self, table_name: str, *, ttl_days: int = 0) -> None:
        self._table = aws.table(table_name)
        self._ttl_days = ttl_days

    # --- helpers -----------------------------------------------------------------------

    def _ttl(self) -> dict[str, Any]:
        if not self._ttl_days:
            return {}
        return {"ttl": int(clock.now()) + self._ttl_days * 86400}

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise
            if _is_item_too_large(exc):
                raise ItemTooLargeError(
                    "The record is too large to store (DynamoDB items are at most 400 KB): "
                    "send less metadata or a smaller input."
                ) from exc
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc

    def _conditional_update(self, **kwargs: Any) -> dict[str, Any] | None:
        """UpdateItem; None when the condition failed."""
        try:
            response = self._call(self._table.update_item, **kwargs)
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return None
            raise  # pragma: no cover - _call wraps everything else
        return dict(response.get("Attributes") or {})

    # --- threads -------------------------------------------------------------------------

    def put_thread(self, thread: ThreadRecord, *, if_absent: bool) -> bool:
        """Create a thread; False when ``if_absent`` and it already exists."""
        item = {
            "pk": _thread_pk(thread.thread_id),
            "sk": "THREAD",
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
            kwargs["ConditionExpression"] = Attr("pk").not_exists()
        try:
            self._call(self._table.put_item, **kwargs)
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return False
            raise  # pragma: no cover
        return True

    def get_thread(self, thread_id: str) -> ThreadRecord | None:
        response = self._call(
            self._table.get_item,
            Key={"pk": _thread_pk(thread_id), "sk": "THREAD"},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return ThreadRecord.from_item(item) if item else None

    def update_thread_metadata(self, thread_id: str, metadata: dict[str, Any]) -> ThreadRecord:
        response = self._call(
            self._table.update_item,
            Key={"pk": _thread_pk(thread_id), "sk": "THREAD"},
            UpdateExpression="SET metadata = :m, updated_at = :u",
            ExpressionAttributeValues={":m": dumps(metadata), ":u": now_iso()},
            ReturnValues="ALL_NEW",
        )
        return ThreadRecord.from_item(response["Attributes"])

    def set_thread_state(
        self,
        thread_id: str,
        *,
        status: str,
        values: Any = None,
        interrupts: dict[str, Any] | None = None,
    ) -> None:
        names = {"#st": "status", "#v": "values"}
        expr = "SET #st = :s, updated_at = :u, interrupts = :i"
        vals: dict[str, Any] = {":s": status, ":u": now_iso(), ":i": dumps(interrupts or {})}
        if values is not None:
            encoded = dumps(values)
            if len(encoded) <= _MAX_VALUES_BYTES:
                expr += ", #v = :v"
                vals[":v"] = encoded
        self._call(
            self._table.update_item,
            Key={"pk": _thread_pk(thread_id), "sk": "THREAD"},
            UpdateExpression=expr,
            ExpressionAttributeNames=names if ":v" in vals else {"#st": "status"},
            ExpressionAttributeValues=vals,
        )

    def acquire_thread(self, thread_id: str, run_id: str, *, dequeue: bool = False) -> bool:
        """Make ``run_id`` the thread's one active run; False if another run holds it.

        ``dequeue``: the run was waiting queued; the thread's queued-runs hint goes down.
        """
        expr = "SET active_run_id = :r, #st = :busy, updated_at = :u"
        values: dict[str, Any] = {":r": run_id, ":busy": "busy", ":u": now_iso()}
        if dequeue:
            expr += " ADD queued_runs :minus"
            values[":minus"] = -1
        attributes = self._conditional_update(
            Key={"pk": _thread_pk(thread_id), "sk": "THREAD"},
            UpdateExpression=expr,
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(active_run_id)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=values,
            ReturnValues="UPDATED_NEW",
        )
        return attributes is not None

    def add_queued_hint(self, thread_id: str, delta: int) -> None:
        """How many runs wait queued on the thread: a hint that spares the run-ending worker
        a query when nothing waits. Never negative in effect (``> 0`` is all that is read)."""
        self._call(
            self._table.update_item,
            Key={"pk": _thread_pk(thread_id), "sk": "THREAD"},
            UpdateExpression="ADD queued_runs :d",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":d": delta},
        )

    def release_thread(
        self,
        thread_id: str,
        run_id: str,
        *,
        status: str,
        values: Any = None,
        interrupts: dict[str, Any] | None = None,
    ) -> int:
        """The run ended: record the thread's status and values and free it for the next run.

        Returns the thread's queued-runs hint (``> 0``: a queued run may be waiting)."""
        names = {"#st": "status", "#v": "values"}
        expr = "SET #st = :s, updated_at = :u, interrupts = :i"
        vals: dict[str, Any] = {
            ":s": status,
            ":u": now_iso(),
            ":i": dumps(interrupts or {}),
            ":r": run_id,
        }
        if values is not None:
            encoded = dumps(values)
            if len(encoded) <= _MAX_VALUES_BYTES:
                expr += ", #v = :v"
                vals[":v"] = encoded
        if ":v" not in vals:
            names.pop("#v")
        # Only the holder releases; a release by a stale worker changes nothing.
        attributes = self._conditional_update(
            Key={"pk": _thread_pk(thread_id), "sk": "THREAD"},
            UpdateExpression=expr + " REMOVE active_run_id",
            ConditionExpression="active_run_id = :r",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=vals,
            ReturnValues="ALL_NEW",
        )
        if attributes is None:
            # Not the holder (stale): tell the caller to look for queued runs anyway.
            return 1
        return _int(attributes.get("queued_runs"))

    def search_threads(self, tenant: str) -> Iterator[ThreadRecord]:
        kwargs: dict[str, Any] = {
            "IndexName": "gsi1",
            "KeyConditionExpression": Key("gsi1pk").eq(f"TENANT#{tenant}"),
        }
        while True:
            response = self._call(self._table.query, **kwargs)
            for item in response.get("Items", []):
                # The GSI is eventually consistent and projects all attributes.
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

    # --- runs ----------------------------------------------------------------------------

    def put_run(self, run: RunRecord) -> None:
        item: dict[str, Any] = {
            "pk": _thread_pk(run.thread_id),
            "sk": f"RUN#{run.run_id}",
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
            **self._ttl(),
        }
        if run.lease_until is not None:
            item["lease_until"] = Decimal(str(round(run.lease_until, 3)))
            item["gsi1pk"] = LEASE_PARTITION
            item["gsi1sk"] = _lease_sk(run.lease_until, run.run_id)
        if run.checkpoint_id:
            item["checkpoint_id"] = run.checkpoint_id
        self._call(self._table.put_item, Item=item)

    def get_run(self, thread_id: str, run_id: str) -> RunRecord | None:
        response = self._call(
            self._table.get_item,
            Key={"pk": _thread_pk(thread_id), "sk": f"RUN#{run_id}"},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return RunRecord.from_item(item) if item else None

    def list_runs(self, thread_id: str) -> list[RunRecord]:
        return [RunRecord.from_item(i) for i in self._query_partition(thread_id, prefix="RUN#")]

    def delete_run(self, thread_id: str, run_id: str) -> None:
        self._call(
            self._table.delete_item, Key={"pk": _thread_pk(thread_id), "sk": f"RUN#{run_id}"}
        )

    def start_queued_run(self, thread_id: str, run_id: str, lease_until: float) -> bool:
        """A queued run becomes startable (its thread was acquired for it)."""
        attributes = self._conditional_update(
            Key={"pk": _thread_pk(thread_id), "sk": f"RUN#{run_id}"},
            UpdateExpression="SET queued = :f, lease_until = :l, gsi1pk = :gp, gsi1sk = :gs, updated_at = :u",
            ConditionExpression="queued = :t AND #st = :pending",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":f": False,
                ":t": True,
                ":pending": "pending",
                ":l": Decimal(str(round(lease_until, 3))),
                ":gp": LEASE_PARTITION,
                ":gs": _lease_sk(lease_until, run_id),
                ":u": now_iso(),
            },
            ReturnValues="ALL_NEW",
        )
        return attributes is not None

    def claim_step(
        self, thread_id: str, run_id: str, step: int, lease_until: float
    ) -> RunRecord | None:
        """Claim step ``step`` of a run; the record *before* the claim, or None if this message
        is a duplicate or stale.

        The claim succeeds when the previous step is done and nobody holds a live lease on
        this step: either it was never claimed, or the worker that claimed it died (its lease
        expired). The record comes back, so cancellation needs no extra read.
        """
        now = clock.now()
        attributes = self._conditional_update(
            Key={"pk": _thread_pk(thread_id), "sk": f"RUN#{run_id}"},
            UpdateExpression=(
                "SET claimed_step = :n, lease_until = :l, #st = :running, updated_at = :u, "
                "gsi1pk = :gp, gsi1sk = :gs"
            ),
            ConditionExpression=(
                "#st IN (:pending, :running) AND queued = :f AND done_step = :prev "
                "AND (claimed_step < :n OR lease_until < :now)"
            ),
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":n": step,
                ":prev": step - 1,
                ":l": Decimal(str(round(lease_until, 3))),
                ":now": Decimal(str(round(now, 3))),
                ":running": "running",
                ":pending": "pending",
                ":f": False,
                ":u": now_iso(),
                ":gp": LEASE_PARTITION,
                ":gs": _lease_sk(lease_until, run_id),
            },
            # The old image tells a first attempt (claimed_step < step) from a retry.
            ReturnValues="ALL_OLD",
        )
        return None if attributes is None else RunRecord.from_item(attributes)

    def complete_step(
        self,
        thread_id: str,
        run_id: str,
        step: int,
        *,
        checkpoint_id: str | None,
        start_checkpoint_id: str | None,
        first_step: bool,
        lease_until: float,
    ) -> RunRecord | None:
        """Record a finished (non-final) step; the returned record shows a pending cancel.

        ``lease_until`` here is when housekeeping should re-send the next step message if no
        worker has claimed it by then.
        """
        expr = "SET done_step = :n, lease_until = :l, gsi1sk = :gs, updated_at = :u"
        values: dict[str, Any] = {
            ":n": step,
            ":l": Decimal(str(round(lease_until, 3))),
            ":gs": _lease_sk(lease_until, run_id),
            ":u": now_iso(),
        }
        if checkpoint_id:
            expr += ", checkpoint_id = :c"
            values[":c"] = checkpoint_id
        if first_step and start_checkpoint_id:
            expr += ", start_checkpoint_id = :sc"
            values[":sc"] = start_checkpoint_id
        if first_step:
            expr += ", started = :t"
            values[":t"] = True
        values[":running"] = "running"
        return self._update_run_returning(
            thread_id,
            run_id,
            UpdateExpression=expr,
            ConditionExpression="#st = :running AND claimed_step = :n",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=values,
        )

    def _update_run_returning(self, thread_id: str, run_id: str, **kwargs: Any) -> RunRecord | None:
        attributes = self._conditional_update(
            Key={"pk": _thread_pk(thread_id), "sk": f"RUN#{run_id}"},
            ReturnValues="ALL_NEW",
            **kwargs,
        )
        return None if attributes is None else RunRecord.from_item(attributes)

    def finish_run(
        self,
        thread_id: str,
        run_id: str,
        *,
        status: str,
        error: str | None = None,
        values: Any = None,
        only_if_unclaimed: bool = False,
    ) -> RunRecord | None:
        """Move an active run to a final status; None if it was no longer active (or claimed)."""
        expr = "SET #st = :s, updated_at = :u"
        vals: dict[str, Any] = {
            ":s": status,
            ":u": now_iso(),
            ":pending": "pending",
            ":running": "running",
        }
        names = {"#st": "status"}
        if error is not None:
            expr += ", #err = :e"
            names["#err"] = "error"
            vals[":e"] = error
        if values is not None:
            encoded = dumps(values)
            if len(encoded) <= _MAX_VALUES_BYTES:
                expr += ", #v = :v"
                names["#v"] = "values"
                vals[":v"] = encoded
        condition = "#st IN (:pending, :running)"
        if only_if_unclaimed:
            condition += " AND claimed_step = :zero"
            vals[":zero"] = 0
        return self._update_run_returning(
            thread_id,
            run_id,
            UpdateExpression=expr + " REMOVE lease_until, gsi1pk, gsi1sk",
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=vals,
        )

    def request_cancel(self, thread_id: str, run_id: str, action: str) -> RunRecord | None:
        """Flag an active run for cancellation at its next step boundary."""
        return self._update_run_returning(
            thread_id,
            run_id,
            UpdateExpression="SET cancel = :a, updated_at = :u",
            ConditionExpression="#st IN (:pending, :running)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":a": action,
                ":u": now_iso(),
                ":pending": "pending",
                ":running": "running",
            },
        )

    def extend_lease(self, thread_id: str, run_id: str, lease_until: float) -> None:
        self._set_lease(
            thread_id,
            run_id,
            lease_until,
            "#st IN (:pending, :running)",
            {":pending": "pending", ":running": "running"},
        )

    def release_claim(self, thread_id: str, run_id: str, step: int) -> None:
        """Give up a claim (the step failed and will be retried): its lease ends now."""
        self._set_lease(
            thread_id,
            run_id,
            clock.now() - 1,
            "#st = :running AND claimed_step = :n AND done_step < :n",
            {":running": "running", ":n": step},
        )

    def _set_lease(
        self,
        thread_id: str,
        run_id: str,
        lease_until: float,
        condition: str,
        values: dict[str, Any],
    ) -> None:
        """Move a run's lease (and its place in the expiry index) if ``condition`` holds."""
        self._conditional_update(
            Key={"pk": _thread_pk(thread_id), "sk": f"RUN#{run_id}"},
            UpdateExpression="SET lease_until = :l, gsi1sk = :gs",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":l": Decimal(str(round(lease_until, 3))),
                ":gs": _lease_sk(lease_until, run_id),
                **values,
            },
        )

    def expired_leases(self, now: float, limit: int = 100) -> list[RunRecord]:
        response = self._call(
            self._table.query,
            IndexName="gsi1",
            KeyConditionExpression=Key("gsi1pk").eq(LEASE_PARTITION)
            & Key("gsi1sk").lt(f"{now:016.3f}"),
            Limit=limit,
        )
        return [RunRecord.from_item(item) for item in response.get("Items", [])]

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

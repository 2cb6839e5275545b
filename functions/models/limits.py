"""Provider rate limits and circuit breakers shared by every worker (docs/models.md).

One DynamoDB item per model in the runtime table (``pk = MODEL#<name>``, ``sk = limits``)
holds its token buckets — requests and tokens, refilled continuously at the configured rate
per minute, at most ``burst`` requests' worth banked — and its breaker: consecutive
failures, open until when, and who probes it. A call reads the item and takes its share with
a conditional write on the time it read (optimistic concurrency: a worker that raced
another reads again), so however many workers call, the buckets never give out more than
the rate.

A call that cannot get capacity is not made and not waited for: ``RateLimited`` says how
long until there is some, and the step worker re-queues the step with that delay (no
function sleeps). A share of every bucket is kept for ``high`` priority runs: ``normal``
steps may not take the last ``reserve`` of it, ``low`` ones not the last ``2 x reserve``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions import aws
from functions.errors import InfrastructureError


class ModelLimitsError(ValueError):
    """``LAMBDAGRAPH_MODEL_LIMITS`` that is not a limits table."""


@dataclass(frozen=True)
class ModelLimit:
    # Requests and tokens (input + output) per minute; 0 = not limited.
    rpm: float = 0
    tpm: float = 0
    # The most requests that can go out at once after a quiet spell (default: 10 s' worth).
    burst: float = 0
    # ``provider:model`` used while this model's breaker is open ("" = defer the step).
    fallback: str = ""

    @property
    def request_capacity(self) -> float:
        return max(1.0, self.burst or self.rpm / 6)

    @property
    def token_capacity(self) -> float:
        # Tokens bank as much time as requests do.
        if not self.tpm:
            return 0.0
        return self.tpm * (self.request_capacity / self.rpm) if self.rpm else self.tpm / 6


class RateLimited(RuntimeError):
    """No capacity for this model call now: retry the step in ``retry_after_s``.

    A ``RuntimeError``: LangGraph's default node retry policy leaves it alone, so it reaches
    the step worker at once."""

    def __init__(self, model: str, retry_after_s: float, why: str) -> None:
        super().__init__(f"model {model!r} {why}; retry in {retry_after_s:.1f} s")
        self.model = model
        self.retry_after_s = max(1.0, retry_after_s)


class ModelUnavailable(RateLimited):
    """The model's breaker is open (repeated failures) and it has no fallback."""


def parse_limits(text: str) -> dict[str, ModelLimit]:
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLimitsError(f"model limits are not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLimitsError('model limits must be an object: {"model": {"rpm": ..., ...}}')
    out: dict[str, ModelLimit] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise ModelLimitsError(f"limits of {name!r} must be an object")
        unknown = set(entry) - {"rpm", "tpm", "burst", "fallback"}
        if unknown:
            raise ModelLimitsError(f"limits of {name!r}: unknown keys {sorted(unknown)}")
        numbers = {}
        for key in ("rpm", "tpm", "burst"):
            value = entry.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ModelLimitsError(f"limits of {name!r}: {key} must be a number >= 0")
            numbers[key] = float(value)
        fallback = entry.get("fallback", "")
        if not isinstance(fallback, str):
            raise ModelLimitsError(f"limits of {name!r}: fallback must be 'provider:model'")
        if fallback:
            from functions.models.factory import parse_spec

            parse_spec(fallback)
        out[str(name)] = ModelLimit(fallback=fallback, **numbers)
    return out


@lru_cache(maxsize=8)
def limits_table(text: str) -> dict[str, ModelLimit]:
    return parse_limits(text)


def limit_for(model: str, table: dict[str, ModelLimit]) -> ModelLimit | None:
    """As prices: the model's own entry, else the longest listed name it contains."""
    if model in table:
        return table[model]
    matches = [name for name in table if name in model]
    return table[max(matches, key=len)] if matches else None


# A priority's floor: the share of each bucket it must leave for higher priorities.
def floor_share(priority: str, reserve: float) -> float:
    return {"high": 0.0, "normal": reserve, "low": min(0.9, 2 * reserve)}.get(priority, reserve)


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if value is not None else default


@dataclass(frozen=True)
class Ticket:
    """A granted call."""

    probe: bool
    failures_seen: int
    estimated_tokens: int


class ModelGate:
    """The buckets and breaker of one model in the runtime table."""

    def __init__(
        self,
        table_name: str,
        model: str,
        limit: ModelLimit,
        *,
        reserve: float = 0.2,
        breaker_failures: int = 5,
        breaker_cooldown_s: float = 60.0,
        clock: Any = None,
    ) -> None:
        self.model = model
        self.limit = limit
        self.reserve = reserve
        self.breaker_failures = breaker_failures
        self.breaker_cooldown_s = breaker_cooldown_s
        self._clock = clock or _now
        self._table = aws.table(table_name)
        self._key = {"pk": f"MODEL#{model}", "sk": "limits"}

    # --- DynamoDB ------------------------------------------------------------------------

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise InfrastructureError(f"DynamoDB {fn.__name__} failed: {exc}") from exc

    def _read(self) -> dict[str, Any]:
        response = self._call(self._table.get_item, Key=self._key, ConsistentRead=True)
        return dict(response.get("Item") or {})

    def _write(self, item: dict[str, Any], sets: dict[str, Any]) -> bool:
        """Conditional on nobody having written since ``item`` was read (its version)."""
        version = item.get("v")
        sets = {**sets, "v": int(version or 0) + 1}
        names = {f"#{k}": k for k in sets}
        values = {f":{k}": _dec(v) for k, v in sets.items()}
        expr = "SET " + ", ".join(f"#{k} = :{k}" for k in sets)
        if version is None:
            condition = "attribute_not_exists(#v)"
        else:
            condition = "#v = :read_v"
            values[":read_v"] = version
        try:
            self._call(
                self._table.update_item,
                Key=self._key,
                UpdateExpression=expr,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError:
            return False
        return True

    # --- the gate ------------------------------------------------------------------------

    def acquire(self, priority: str, estimated_tokens: int) -> Ticket:
        """Take one request and ``estimated_tokens`` for a call (a ticket says whether it
        probes a half-open breaker). Raises ``RateLimited`` when there is no capacity,
        ``ModelUnavailable`` while the breaker is open."""
        limit = self.limit
        for _ in range(8):
            item = self._read()
            now = self._clock()
            read_at = item.get("at")
            opened_until = _num(item.get("opened_until"))
            blocked_until = _num(item.get("blocked_until"))
            sets: dict[str, Any] = {"at": now}
            probe = False
            if opened_until > now:
                raise ModelUnavailable(
                    self.model, opened_until - now, "is failing (circuit breaker open)"
                )
            if opened_until and _num(item.get("probe_until")) > now:
                # Half-open and someone is already probing: wait for its verdict.
                raise ModelUnavailable(self.model, 5.0, "is being probed after failures")
            if opened_until:
                sets["probe_until"] = now + 30
                probe = True
            if blocked_until > now:
                raise RateLimited(self.model, blocked_until - now, "was rate limited (429)")
            if limit.rpm or limit.tpm:
                elapsed = max(0.0, now - _num(read_at, now))
                share = floor_share(priority, self.reserve)
                waits: list[float] = []
                if limit.rpm:
                    capacity = limit.request_capacity
                    have = min(capacity, _num(item.get("req"), capacity) + elapsed * limit.rpm / 60)
                    # The reserve never leaves a bucket too small for a single request.
                    need = 1 + min(capacity * share, capacity - 1)
                    if have + 1e-9 < need:
                        waits.append((need - have) * 60 / limit.rpm)
                    sets["req"] = have - 1
                if limit.tpm:
                    capacity = limit.token_capacity
                    have = min(capacity, _num(item.get("tok"), capacity) + elapsed * limit.tpm / 60)
                    want = min(float(estimated_tokens), capacity * (1 - share))
                    need = want + capacity * share
                    if have + 1e-9 < need:
                        waits.append((need - have) * 60 / limit.tpm)
                    sets["tok"] = have - want
                    estimated_tokens = int(want)
                if waits:
                    raise RateLimited(
                        self.model, max(waits), f"is at its rate limit for {priority} work"
                    )
            if self._write(item, sets):
                return Ticket(probe, int(_num(item.get("failures"))), estimated_tokens)
        raise RateLimited(self.model, 1.0, "is contended")

    def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        """After the call: the tokens it really used replace the estimate (the bucket may go
        below zero: the next calls wait longer)."""
        limit = self.limit
        if not limit.tpm or actual_tokens == ticket.estimated_tokens:
            return
        for _ in range(8):
            item = self._read()
            now = self._clock()
            read_at = item.get("at")
            elapsed = max(0.0, now - _num(read_at, now))
            capacity = limit.token_capacity
            have = min(capacity, _num(item.get("tok"), capacity) + elapsed * limit.tpm / 60)
            sets: dict[str, Any] = {
                "at": now,
                "tok": have + ticket.estimated_tokens - actual_tokens,
            }
            if limit.rpm:
                rcap = limit.request_capacity
                sets["req"] = min(rcap, _num(item.get("req"), rcap) + elapsed * limit.rpm / 60)
            if self._write(item, sets):
                return

    def succeeded(self, ticket: Ticket) -> None:
        """A call went through: a probe closes the breaker; failures so far are forgiven."""
        if ticket.probe:
            self._call(
                self._table.update_item,
                Key=self._key,
                UpdateExpression="SET failures = :z, opened_until = :z, probe_until = :z ADD v :one",
                ExpressionAttributeValues={":z": 0, ":one": 1},
            )
        elif ticket.failures_seen:
            self._call(
                self._table.update_item,
                Key=self._key,
                UpdateExpression="SET failures = :z ADD v :one",
                ExpressionAttributeValues={":z": 0, ":one": 1},
            )

    def failed(self, ticket: Ticket, *, rate_limited: bool, retry_after_s: float | None) -> None:
        """A transient failure (after the call's own retries). A provider 429 drains the
        buckets until its retry-after; ``breaker_failures`` in a row open the breaker."""
        now = self._clock()
        sets = "SET #at = :now"
        values: dict[str, Any] = {":now": _dec(now), ":one": 1}
        if rate_limited:
            sets += ", req = :z, tok = :z, blocked_until = :until"
            values[":z"] = 0
            values[":until"] = _dec(now + (retry_after_s or 10.0))
        response = self._call(
            self._table.update_item,
            Key=self._key,
            UpdateExpression=sets + " ADD failures :one, v :one",
            ExpressionAttributeNames={"#at": "at"},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        item = response.get("Attributes") or {}
        if ticket.probe or _num(item.get("failures")) >= self.breaker_failures:
            self._call(
                self._table.update_item,
                Key=self._key,
                UpdateExpression="SET opened_until = :until, probe_until = :z ADD v :one",
                ExpressionAttributeValues={
                    ":one": 1,
                    ":until": _dec(now + self.breaker_cooldown_s),
                    ":z": 0,
                },
            )


def _dec(value: Any) -> Any:
    # str(float) round-trips exactly: the time read back equals the time written.
    return Decimal(str(value)) if isinstance(value, float) else value


def _now() -> float:
    # Read at call time: a test's simulated clock (functions.clock) applies.
    from functions import clock

    return clock.now()

"""Fault injection for the local stack: ``LAMBDAGRAPH_FAULTS=crash=p,duplicate=p,throttle=p``.

What AWS does to a serverless run now and then, on demand and counted
(``GET /_local/faults`` answers ``{"crash": n, "duplicate": n, "throttle": n}``):

- ``crash=p``: with probability p a step worker invocation dies at a random point of its step.
  The point is one of the AWS calls it makes (drawn among as many calls as the largest number a
  finished invocation has made so far), just before that call is sent or just after it
  succeeded. The pollers then treat it as a Lambda that died: its messages stay in flight and
  come back after the queue's visibility timeout. An invocation that finishes before its
  crash point did not crash and is not counted.
- ``duplicate=p``: with probability p a received step message is delivered twice, half the
  time at once in a second invocation running beside the first, half the time again a little
  after the first finished (SQS delivers at least once).
- ``throttle=p``: with probability p an AWS call a handler makes (each HTTP attempt) answers
  HTTP 400 with DynamoDB's ``ProvisionedThroughputExceededException`` or SQS's
  ``ThrottlingException`` instead of being sent, so botocore's own retry logic sees it as it
  would on AWS. Other services are not throttled.

Crashes and duplicates concern the step worker; throttling concerns every AWS call of a
handler the stack invokes in its own process (step worker and housekeeping; the API
environments are not faulted). The calls are seen through the botocore hook of
``infra.local.invocations``.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal

from botocore.awsrequest import AWSResponse

from infra.local.invocations import CrashPoint

FAULTS_ENV = "LAMBDAGRAPH_FAULTS"
SEED_ENV = "LAMBDAGRAPH_FAULTS_SEED"
FAULT_NAMES = ("crash", "duplicate", "throttle")

# The most AWS calls a step worker invocation makes (README: at most 6 per superstep): crash
# points are drawn among this many calls until a finished invocation shows more.
INITIAL_CALLS_PER_INVOCATION = 6
# A later duplicate arrives this long (at most) after the first delivery finished.
LATER_DUPLICATE_MAX_S = 1.0

Fault = Literal["crash", "duplicate", "throttle"]


class FaultConfigError(ValueError):
    """``LAMBDAGRAPH_FAULTS`` could not be read; the message says what was wrong."""


@dataclass(frozen=True)
class FaultConfig:
    """Probabilities of each fault (0 = never)."""

    crash: float = 0.0
    duplicate: float = 0.0
    throttle: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> FaultConfig:
        """``crash=0.2,duplicate=0.3,throttle=0.05`` (any subset; empty or unset = no faults)."""
        if text is None or not text.strip():
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            item = part.strip()
            if not item:
                continue
            name, sep, raw = (piece.strip() for piece in item.partition("="))
            if not sep or not name or not raw:
                raise FaultConfigError(
                    f"{FAULTS_ENV}: expected name=probability, got {item!r} "
                    f"(example: {FAULTS_ENV}=crash=0.2,duplicate=0.3,throttle=0.05)"
                )
            if name not in FAULT_NAMES:
                raise FaultConfigError(
                    f"{FAULTS_ENV}: unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})"
                )
            if name in values:
                raise FaultConfigError(f"{FAULTS_ENV}: {name!r} is given twice")
            try:
                probability = float(raw)
            except ValueError:
                probability = -1.0
            if not 0.0 <= probability <= 1.0:
                raise FaultConfigError(
                    f"{FAULTS_ENV}: {name!r} needs a probability between 0 and 1, got {raw!r}"
                )
            values[name] = probability
        return cls(**values)

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in fields(self))

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))


def parse_seed(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw)
    except ValueError:
        raise FaultConfigError(f"{SEED_ENV} must be a whole number, got {raw!r}") from None


class _Body:
    """The raw stream botocore reads a response body from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


# service id (botocore's hyphenized form) -> (error code, JSON __type, extra headers)
_THROTTLING: dict[str, tuple[str, str, dict[str, str]]] = {
    "dynamodb": (
        "ProvisionedThroughputExceededException",
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        {"Content-Type": "application/x-amz-json-1.0"},
    ),
    "sqs": (
        "ThrottlingException",
        "com.amazonaws.sqs#ThrottlingException",
        # SQS speaks JSON but keeps its query-protocol error codes in this header.
        {
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-query-error": "ThrottlingException;Sender",
        },
    ),
}


def throttling_response(service_id: str, url: str) -> AWSResponse | None:
    """The HTTP 400 AWS answers a throttled ``service_id`` call with (None: not throttled here)."""
    known = _THROTTLING.get(service_id)
    if known is None:
        return None
    code, error_type, headers = known
    body = json.dumps(
        {"__type": error_type, "message": f"Rate exceeded ({code} injected by the local stack)"}
    ).encode()
    all_headers: Any = {
        **headers,
        "x-amzn-RequestId": str(uuid.uuid4()),
        "Content-Length": str(len(body)),
    }
    return AWSResponse(url, 400, all_headers, _Body(body))


class FaultInjector:
    """Draws the faults of ``config`` and counts the ones injected (thread-safe)."""

    def __init__(self, config: FaultConfig, *, seed: int | None = None) -> None:
        self.config = config
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(FAULT_NAMES, 0)
        self._most_calls = INITIAL_CALLS_PER_INVOCATION

    def counts(self) -> dict[str, int]:
        """Faults injected so far, by name (what ``GET /_local/faults`` answers)."""
        with self._lock:
            return dict(self._counts)

    def count(self, fault: Fault, n: int = 1) -> None:
        with self._lock:
            self._counts[fault] += n

    def _roll(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            return self._random.random() < probability

    def plan_crash(self) -> CrashPoint | None:
        """Where a new step worker invocation will die, or None (it will not be crashed)."""
        if not self._roll(self.config.crash):
            return None
        with self._lock:
            call = self._random.randrange(self._most_calls)
            after = self._random.random() < 0.5
        return CrashPoint(call, after)

    def finished(self, calls: int) -> None:
        """A step worker invocation finished after ``calls`` AWS calls (widens the crash range)."""
        with self._lock:
            self._most_calls = max(self._most_calls, calls)

    def duplicate(self) -> Literal["now", "later"] | None:
        """Whether a received step message is delivered again, and when."""
        if not self._roll(self.config.duplicate):
            return None
        with self._lock:
            return "now" if self._random.random() < 0.5 else "later"

    def later_delay_s(self) -> float:
        with self._lock:
            return self._random.uniform(0.0, LATER_DUPLICATE_MAX_S)

    def throttle(self, service_id: str, operation: str, request: Any) -> AWSResponse | None:
        """A throttling answer for this HTTP attempt instead of sending it, or None (send it)."""
        if service_id not in _THROTTLING or not self._roll(self.config.throttle):
            return None
        self.count("throttle")
        return throttling_response(service_id, str(getattr(request, "url", "")))

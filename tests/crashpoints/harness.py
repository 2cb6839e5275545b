"""The crash-point harness: record a scenario's AWS calls, then replay it dying at each one.

A *scenario* is a client script (create a thread, start runs, cancel, ...) plus the recovery
that follows. It is first played fault-free: every AWS call the engine makes (API, step worker,
housekeeping; DynamoDB, SQS, S3, the checkpoint saver's own clients too) is recorded as
(service, operation, where, engine frames), and the final observable outcome is kept. Then,
for each call index i, the scenario is replayed on a fresh stack with the process dying just
before call i (``before-send`` raises) and, separately, just after call i was answered but
before the engine saw the answer (``after-call`` raises). The death is ``Crash``, a
``BaseException``: no ``except Exception`` in the engine can catch it; the harness catches it
at the invocation boundary, forgets everything the process had in memory (a cold start) and
lets the system recover as AWS would:

- a step-worker invocation that died neither deletes nor releases its SQS message: it is
  visible again when the simulated clock passes receive time + the queue's visibility timeout;
  receives are counted by SQS (moto), so after ``maxReceiveCount`` the message goes to the
  dead-letter queue as on AWS;
- an API request that died is, to the client, a failed request: a careful SDK user checks
  whether what it asked for exists (its run, by a client reference in the run's metadata) and
  retries only if not;
- a housekeeping invocation that died just ends; the next runs on schedule.

Time is simulated and *advanced*, never slept: ``functions.clock.now`` reads the harness
clock, and the deployed timings come from ``functions.resources`` (visibility timeout, lease,
function timeout, housekeeping schedule). botocore's retry back-off advances it too.

A crash point is named by the call's identity (invocation, service, operation, engine
frames, what it touched, occurrence), not by its global index: LangGraph writes checkpoints
from worker threads, in an order that varies between runs. What a crash leaves behind is the
invocation that died and the writes it had made, so the points of an invocation between two
of its writes (along its own thread) form a class; ``explore_crashes`` replays one point per
class by default, and with ``every_point=True`` (the benchmark) each point on its own,
checking that the points of a class do end alike.

moto applies concurrent requests without isolation (two conditional updates of one item can
both succeed); on AWS each request is atomic, so the engine's requests reach moto one at a
time (invocations still interleave between requests).

The throttling/duplicates variant replays the same scenarios with every AWS call answering a
throttling error with a seeded probability (a synthetic HTTP 400 from ``before-send``, so
botocore's retry logic handles it as on AWS) and every step message delivered twice, sometimes
by two concurrent invocations.

After every replay the outcome must equal the fault-free one (values, not ids or timestamps)
and the invariants must hold: no thread held, no run pending/running, nothing in a DLQ,
nothing left in the step queues, every final run's run-ended event put on the bus (the same
content if a retried effect put it again) and every approval it asked for started exactly
once on the approval state machine (``EffectSinks``).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import re
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.endpoint
from botocore.awsrequest import AWSResponse

from functions import clock
from functions.resources import (
    CHECKPOINT_TABLE,
    PRIORITIES,
    RUNTIME_TABLE,
    STEP_QUEUES,
    STEP_TIMINGS,
    StepTimings,
)
from functions.settings import Settings
from tests.conftest import forget_cached_state
from tests.integration.conftest import KEY_A, LambdaContext, Stack, load_event

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"

# A stuck run: nothing can change any more. Recovery legitimately takes up to
# maxReceiveCount x visibility timeout (a message failing until the DLQ: 2.5 h); a day is far
# beyond any of it.
CAP_S = 24 * 3600.0
# Early exit for a stuck run: the system's state (leases and timestamps aside) and its queues
# have not changed for longer than any timer in it (two visibility timeouts and a lease).
STALL_S = 2 * STEP_TIMINGS.visibility_timeout_s + STEP_TIMINGS.lease_s
# Run record attributes that move with time alone (not progress).
_VOLATILE = frozenset({"lease_until", "gsi1pk", "gsi1sk", "updated_at", "ttl"})
ACTIVE = ("pending", "running")


# Calls without effect in AWS: a process that dies after one of them leaves what it would
# have left dying just before it.
READ_OPERATIONS = frozenset(
    {
        "GetItem",
        "BatchGetItem",
        "TransactGetItems",
        "Query",
        "Scan",
        "DescribeTable",
        "GetObject",
        "HeadObject",
        "HeadBucket",
        "ListObjectsV2",
        "GetQueueAttributes",
        "GetQueueUrl",
    }
)


# Answers botocore's standard retry mode retries (the call goes on).
RETRIED_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "SlowDown",
        "TransactionInProgressException",
        "RequestThrottled",
    }
)
# Errors that say the request changed nothing.
NO_EFFECT_ERRORS = frozenset(
    {"ConditionalCheckFailedException", "TransactionCanceledException", "ExecutionAlreadyExists"}
)


class CrashPointsExplored(UserWarning):
    """How many crash points a test explored (reported as a warning under xdist)."""


class Crash(BaseException):
    """The process died here (injected). Not an ``Exception``: nothing in the engine catches it."""


# --- the simulated clock ---------------------------------------------------------------------


class SimClock:
    """Seconds since the epoch, moved by the harness (and by botocore's retry back-off)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, float(seconds))

    def advance_to(self, when: float) -> None:
        with self._lock:
            self._now = max(self._now, when)

    def reset(self) -> None:
        with self._lock:
            self._now = self.start

    def elapsed(self) -> float:
        return self._now - self.start


class _SimTime(types.ModuleType):
    """``time`` as botocore's endpoint sees it: ``sleep`` (retry back-off) advances the clock."""

    def __init__(self, sim: SimClock) -> None:
        super().__init__("time")
        self._sim = sim

    def sleep(self, seconds: float) -> None:
        self._sim.advance(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


# --- calls and faults ------------------------------------------------------------------------


@dataclass
class Call:
    """One AWS call the engine made."""

    index: int
    service: str
    operation: str
    where: str  # the invocation: "api POST /threads/t/runs [r1]", "worker r1 step 2", ...
    code: str  # engine frames, innermost first: "store.claim_step < steps._process"
    detail: str  # what it touched: "runtime RUN# SET claimed_step = :n, ..."
    invocation: int = 0  # which invocation made it (numbered in order)
    occurrence: int = 0  # how many calls of the same kind the invocation made before it
    main_thread: bool = True  # made on the invocation's own thread (not a LangGraph worker's)
    error: str | None = None  # the error code AWS answered, if any

    @property
    def key(self) -> tuple[Any, ...]:
        """The call's identity across replays. A global index is not one: LangGraph writes
        checkpoints from worker threads, in an order that varies from run to run."""
        kind = (self.service, self.operation, self.code, self.detail)
        return (self.invocation, *kind, self.occurrence)

    @property
    def name(self) -> str:
        return f"{self.service}:{self.operation}"

    @property
    def writes(self) -> bool:
        """Whether the call changed anything in AWS: reads do not, nor a refused condition."""
        return self.operation not in READ_OPERATIONS and self.error not in NO_EFFECT_ERRORS

    def __str__(self) -> str:
        return f"#{self.index} {self.name} in {self.where} by {self.code} [{self.detail}]"


@dataclass(frozen=True)
class Plan:
    """The faults of one replay."""

    crash_at: int | None = None  # index of the call to die at, in the fault-free run
    mode: str = "before"  # "before": the call never reached AWS; "after": answered, unseen
    target: tuple[Any, ...] | None = None  # that call's ``Call.key``
    throttle: float = 0.0  # probability that an AWS request attempt is throttled
    duplicates: bool = False  # every step message delivered twice (sometimes concurrently)
    seed: int = 0

    def __str__(self) -> str:
        if self.crash_at is not None:
            return f"crash {self.mode} call #{self.crash_at}"
        if self.throttle or self.duplicates:
            return f"throttle p={self.throttle} duplicates={self.duplicates} seed={self.seed}"
        return "fault-free"


@dataclass
class Invocation:
    """One Lambda invocation: shared by the threads it runs on (LangGraph's executor copies
    the context into its threads, so the ContextVar below reaches them)."""

    where: str
    crash_after_calls: int | None = None  # a scripted crash inside this invocation
    number: int = 0
    repeat: int = 0  # how many invocations with the same label came before (throttle draws)
    thread: int = field(default_factory=threading.get_ident)
    seen: dict[tuple[Any, ...], int] = field(default_factory=dict)
    calls: int = 0
    dead: bool = False
    crashed_at: Call | None = None
    scripted_fired: bool = False


_INVOCATION: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "crashpoints_invocation", default=None
)
_UNATTRIBUTED = Invocation("(no invocation)")


class _CallState(threading.local):
    """The call in progress on this thread (its before-call, before-send and after-call
    events all run on the thread that made it)."""

    call: Call | None = None
    attempt: int = 0
    holding: bool = False  # the request lock (see Faults._atomic)


def _hash_unit(*parts: Any) -> float:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


_FRAME_NAMES: dict[Any, str | None] = {}


def _frame_name(code: Any) -> str | None:
    """``module.function`` for an engine code object (``functions/`` minus ``aws.py``)."""
    if code not in _FRAME_NAMES:
        filename = code.co_filename
        root = str(FUNCTIONS_DIR) + "/"
        name = None
        if filename.startswith(root) and not filename.endswith("/aws.py"):
            module = filename[len(root) :].removesuffix(".py").replace("/", ".")
            name = f"{module}.{code.co_name}"
        _FRAME_NAMES[code] = name
    return _FRAME_NAMES[code]


def _engine_frames(limit: int = 3) -> str:
    frame = sys._getframe(2)
    names: list[str] = []
    while frame is not None and len(names) < limit:
        name = _frame_name(frame.f_code)
        if name is not None:
            names.append(name)
        frame = frame.f_back  # type: ignore[assignment]
    return " < ".join(names) or "?"


def _sk_kind(key: Any) -> str:
    """``RUN#`` / ``THREAD`` / ... from a key or item (plain or typed values)."""
    sk = (key or {}).get("sk", "") if isinstance(key, dict) else ""
    if isinstance(sk, dict):
        sk = next(iter(sk.values()), "")
    sk = str(sk)
    return sk.split("#", 1)[0] + "#" if "#" in sk else sk


def _call_detail(service: str, operation: str, params: dict[str, Any]) -> str:
    if service == "dynamodb":
        table = str(params.get("TableName", ""))
        parts = ["checkpoints" if table.startswith("checkpoints-") else "runtime"]
        if parts[0] == "runtime":
            parts.append(_sk_kind(params.get("Key") or params.get("Item")))
        for name in ("UpdateExpression", "IndexName"):
            if isinstance(params.get(name), str):
                parts.append(params[name][:48])
        for item in params.get("TransactItems") or []:
            for kind, op in item.items():
                parts.append(f"{kind} {_sk_kind(op.get('Key') or op.get('Item'))}")
        return " ".join(p for p in parts if p)
    if service == "sqs" and operation == "SendMessage":
        try:
            body = json.loads(params.get("MessageBody", "{}"))
        except ValueError:
            return ""
        return f"step {body.get('step')}" if isinstance(body, dict) else ""
    return ""


def _throttled_response(service: str) -> AWSResponse:
    """What AWS answers a throttled request: botocore retries it as it would on AWS."""
    if service == "s3":
        status, body = (
            503,
            b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>",
        )
        headers = {"Content-Type": "application/xml"}
    elif service == "sqs":
        status = 400
        body = json.dumps(
            {"__type": "com.amazonaws.sqs#ThrottlingException", "message": "Rate exceeded"}
        ).encode()
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-query-error": "ThrottlingException;Sender",
        }
    else:
        status = 400
        body = json.dumps(
            {
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "The level of configured provisioned throughput for the table was exceeded.",
            }
        ).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0"}
    return _response(status, body, headers)


def _response(status: int, body: bytes, headers: dict[str, str]) -> AWSResponse:
    headers = {**headers, "x-amzn-RequestId": uuid.uuid4().hex}

    class _Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield body

    return AWSResponse("https://crashpoints.local/", status, headers, _Raw())


class Faults:
    """botocore hooks on every engine client: record calls, crash, throttle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.enabled = False
        self.plan = Plan()
        self.calls: list[Call] = []
        # Step messages the engine sent (queue URL, body), and the delayed ones held back.
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.delayed: list[tuple[str, str, int]] = []
        self.throttled = 0
        self.invocations = 0
        self.labels: dict[str, int] = {}
        self.active: list[Invocation] = []
        self.state = _CallState()
        # moto applies concurrent requests without isolation (two conditional updates of one
        # item can both succeed); on AWS each request is atomic. The engine's requests to
        # moto are therefore made one at a time; invocations still interleave between them.
        self._atomic = threading.Lock()

    def reset(self, plan: Plan) -> None:
        with self._lock:
            self.plan = plan
            self.calls = []
            self.sent = []
            self.delayed = []
            self.throttled = 0
            self.invocations = 0
            self.labels = {}
            self.enabled = False

    def register(self, events: Any) -> None:
        events.register("before-parameter-build", self._before_parameter_build)
        events.register("before-call", self._before_call)
        events.register("before-send", self._before_send)
        events.register("after-call", self._after_call)
        events.register("needs-retry", self._request_done)

    @contextlib.contextmanager
    def invocation(
        self, where: str, *, crash_after_calls: int | None = None
    ) -> Iterator[Invocation]:
        """One Lambda invocation in this context (its calls are labelled ``where``)."""
        with self._lock:
            self.invocations += 1
            repeat = self.labels.get(where, 0)
            self.labels[where] = repeat + 1
            inv = Invocation(where, crash_after_calls, self.invocations, repeat)
            self.active.append(inv)
        token = _INVOCATION.set(inv)
        try:
            yield inv
        finally:
            _INVOCATION.reset(token)
            with self._lock:
                self.active.remove(inv)

    def _current(self) -> Invocation:
        """The invocation making a call. LangGraph submits some checkpoint writes from a
        future's done-callback, which runs outside the copied context: those belong to the
        invocation running in the process (the latest, when duplicates run concurrently)."""
        inv = _INVOCATION.get()
        if inv is not None:
            return inv
        with self._lock:
            return self.active[-1] if self.active else _UNATTRIBUTED

    def _die(self, inv: Invocation, call: Call | None, *, scripted: bool = False) -> None:
        if inv is _UNATTRIBUTED:
            raise AssertionError(f"harness: a call outside any invocation was to crash: {call}")
        inv.dead = True
        inv.crashed_at = call
        inv.scripted_fired = scripted
        raise Crash(str(call) if call else "dead")

    def _before_parameter_build(self, params: dict[str, Any], context: Any, **_: Any) -> None:
        if isinstance(context, dict):
            context["crashpoints_params"] = dict(params)

    def _before_call(self, model: Any, context: Any, **_: Any) -> None:
        if not self.enabled:
            if isinstance(context, dict):
                params = context.get("crashpoints_params", {})
                context["crashpoints"] = {"call": None, "params": params}
            self.state.call = None
            return
        inv = self._current()
        if inv.dead:
            # Unwinding (a finally, another branch's thread): a dead process makes no calls.
            raise Crash("a dead process made another AWS call")
        service = model.service_model.service_name
        params = context.get("crashpoints_params", {}) if isinstance(context, dict) else {}
        code = _engine_frames()
        detail = _call_detail(service, model.name, params)
        with self._lock:
            kind = (service, model.name, code, detail)
            occurrence = inv.seen.get(kind, 0)
            inv.seen[kind] = occurrence + 1
            call = Call(
                len(self.calls),
                service,
                model.name,
                inv.where,
                code,
                detail,
                inv.number,
                occurrence,
                threading.get_ident() == inv.thread,
            )
            self.calls.append(call)
            inv.calls += 1
        self.state.call = call
        self.state.attempt = 0
        if isinstance(context, dict):
            context["crashpoints"] = {"call": call, "params": params}

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        call = self.state.call
        if self.enabled and call is not None:
            inv = self._current()
            if inv.dead:
                raise Crash("a dead process made another AWS request")
            self.state.attempt += 1
            plan = self.plan
            if plan.target == call.key and plan.mode == "before" and self.state.attempt == 1:
                self._die(inv, call)
            if plan.throttle:
                draw = _hash_unit(
                    plan.seed,
                    inv.where,
                    inv.repeat,
                    call.operation,
                    call.detail,
                    inv.calls,
                    self.state.attempt,
                )
                if draw < plan.throttle:
                    with self._lock:
                        self.throttled += 1
                    return _throttled_response(call.service)
        held = self._hold_delayed(request)
        if held is None and not self.state.holding:
            if not self._atomic.acquire(timeout=120):
                raise AssertionError("harness: the request lock was never released")
            self.state.holding = True
            if self.enabled and call is not None and self._current().dead:
                # The process died while this thread waited for its turn.
                self._request_done()
                raise Crash("a dead process made another AWS request")
        return held

    def _request_done(self, response: Any = None, **_: Any) -> None:
        """After every attempt (``needs-retry`` follows each, failed or not).

        A crash "just after the call was answered" takes effect here, before the request
        lock is released: no other thread of the process gets a request out after it. Not
        on an answer botocore retries (throttling, 5xx): the call is not over yet. A scripted
        crash (a stuck step: dies after its claim) needs the call to have succeeded."""
        call = self.state.call
        if self.enabled and call is not None:
            inv = self._current()
            plan = self.plan
            status = 0
            code = ""
            if isinstance(response, tuple) and response:
                status = int(getattr(response[0], "status_code", 0) or 0)
                parsed = response[1] if len(response) > 1 else {}
                if isinstance(parsed, dict):
                    code = str(parsed.get("Error", {}).get("Code", ""))
            retried = status >= 500 or code in RETRIED_ERRORS or not status
            swept = plan.target == call.key and plan.mode == "after" and not retried
            scripted = (
                inv.crash_after_calls is not None
                and inv.calls >= inv.crash_after_calls
                and 0 < status < 300
            )
            if (swept or scripted) and inv is not _UNATTRIBUTED and not inv.dead:
                inv.dead = True
                inv.crashed_at = call
                inv.scripted_fired = not swept
        if self.state.holding:
            self.state.holding = False
            self._atomic.release()

    def _hold_delayed(self, request: Any) -> AWSResponse | None:
        """A ``SendMessage`` with ``DelaySeconds``: SQS would hide it that long in *real*
        time; the harness keeps it and sends it itself when the simulated clock gets there,
        answering the engine as SQS would."""
        target = request.headers.get("X-Amz-Target", "")
        if isinstance(target, bytes):
            target = target.decode()
        if not target.endswith(".SendMessage"):
            return None
        try:
            params = json.loads(request.body or b"{}")
        except ValueError:
            return None
        delay = int(params.get("DelaySeconds") or 0)
        if delay <= 0:
            return None
        body = str(params["MessageBody"])
        with self._lock:
            self.delayed.append((str(params["QueueUrl"]), body, delay))
        answer = json.dumps(
            {
                "MessageId": str(uuid.uuid4()),
                "MD5OfMessageBody": hashlib.md5(body.encode()).hexdigest(),
            }
        ).encode()
        return _response(200, answer, {"Content-Type": "application/x-amz-json-1.0"})

    def _after_call(
        self, http_response: Any, parsed: Any, model: Any, context: Any, **_: Any
    ) -> None:
        info = context.get("crashpoints") if isinstance(context, dict) else None
        if info is None:
            return
        status = getattr(http_response, "status_code", 0)
        if info["call"] is not None and status >= 300 and isinstance(parsed, dict):
            info["call"].error = str(parsed.get("Error", {}).get("Code") or status)
        params = info["params"]
        if model.name == "SendMessage" and status == 200 and not params.get("DelaySeconds"):
            try:
                body = json.loads(params["MessageBody"])
            except (KeyError, ValueError):
                body = None
            if isinstance(body, dict):
                with self._lock:
                    self.sent.append((str(params.get("QueueUrl")), body))
        call: Call | None = info["call"]
        if not self.enabled or call is None:
            return
        inv = self._current()
        if inv.dead and inv.crashed_at is call:
            raise Crash(str(call))  # marked dead when the answer arrived (_request_done)


# --- the environment: clock, hooked boto3 session, cold starts -------------------------------


def cold_start() -> None:
    """Forget everything a process held in memory: boto3 clients, savers, compiled graphs.

    A crashed Lambda environment is gone; the next invocation starts cold. Every functools
    cache in the engine's modules is cleared (so a cache added later is covered too), the
    compiled-graph cache and the handlers' singletons are dropped.
    """
    forget_cached_state()
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("functions.handlers."):
            continue
        for singleton in ("_services", "_worker"):
            if hasattr(module, singleton):
                setattr(module, singleton, None)
    graph_cache = getattr(sys.modules.get("functions.graph_loader"), "_CACHE", None)
    if isinstance(graph_cache, dict):
        graph_cache.clear()


class Environment:
    """The process-wide setting of a crash-point session (use as a context manager).

    ``functions.clock.now`` reads the simulated clock; boto3's default session (from which
    the engine's clients and the checkpoint saver's clients are made) carries the fault
    hooks; botocore's retry back-off advances the simulated clock; the harness's own clients
    come from a separate, hook-free session.
    """

    def __init__(self, endpoint: str, *, timings: StepTimings = STEP_TIMINGS) -> None:
        self.endpoint = endpoint
        self.timings = timings
        self.clock = SimClock(float(int(time.time())))
        self.faults = Faults()
        self.plain = boto3.session.Session()
        self.dynamodb = self.client("dynamodb")
        self.sqs = self.client("sqs")
        self._queues: Queues | None = None
        self.queues_dirty = False
        self._sinks: EffectSinks | None = None
        self.explored = 0
        self._undo: list[Callable[[], None]] = []

    @property
    def queues_known(self) -> Queues:
        assert self._queues is not None
        return self._queues

    @property
    def queues(self) -> Queues:
        if self._queues is None or self.queues_dirty:
            # Fresh queues after a replay that left messages behind (SQS allows one purge a
            # minute per queue).
            self._queues = Queues.create(self.sqs)
        self.queues_dirty = False
        return self._queues

    @property
    def sinks(self) -> EffectSinks:
        if self._sinks is None:
            self._sinks = EffectSinks.create(self)
        return self._sinks

    def _patch(self, target: Any, name: str, value: Any) -> None:
        missing = object()
        old = getattr(target, name, missing)
        setattr(target, name, value)
        self._undo.append(
            lambda: delattr(target, name) if old is missing else setattr(target, name, old)
        )

    def __enter__(self) -> Environment:
        import os

        old_endpoint = os.environ.get("AWS_ENDPOINT_URL")
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint
        self._undo.append(
            lambda: (
                os.environ.pop("AWS_ENDPOINT_URL", None)
                if old_endpoint is None
                else os.environ.__setitem__("AWS_ENDPOINT_URL", old_endpoint)
            )
        )
        hooked = boto3.session.Session()
        self.faults.register(hooked.events)
        self._patch(boto3, "DEFAULT_SESSION", hooked)
        self._patch(clock, "now", self.clock.now)
        self._patch(botocore.endpoint, "time", _SimTime(self.clock))
        from graphs import registry
        from tests.crashpoints.graphs import TEST_GRAPHS

        self._patch(registry, "GRAPHS", {**registry.GRAPHS, **TEST_GRAPHS})
        cold_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.faults.enabled = False
        while self._undo:
            self._undo.pop()()
        cold_start()

    def client(self, service: str) -> Any:
        return self.plain.client(service, endpoint_url=self.endpoint)


# --- a stack with dead-letter queues, rebuilt on every cold start ----------------------------


@dataclass
class Queues:
    """The step queues and their dead-letter queues, as deployed (``STEP_QUEUES``): the
    visibility timeout, retention and redrive policy (``maxReceiveCount``). Made once per
    environment and shared by its replays (new ones after a replay left messages behind)."""

    urls: dict[str, str]
    dlq_urls: dict[str, str]
    max_receive_count: int

    @classmethod
    def create(cls, sqs: Any) -> Queues:
        suffix = uuid.uuid4().hex[:10]
        urls: dict[str, str] = {}
        dlqs: dict[str, str] = {}
        for priority in PRIORITIES:
            spec = STEP_QUEUES[priority]
            dlqs[priority] = sqs.create_queue(
                QueueName=f"steps-{priority}-dlq-{suffix}",
                Attributes={"MessageRetentionPeriod": str(spec.retention_s)},
            )["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(
                QueueUrl=dlqs[priority], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            urls[priority] = sqs.create_queue(
                QueueName=f"steps-{priority}-{suffix}",
                Attributes={
                    "VisibilityTimeout": str(spec.visibility_timeout_s),
                    "MessageRetentionPeriod": str(spec.retention_s),
                    "RedrivePolicy": json.dumps(
                        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}
                    ),
                },
            )["QueueUrl"]
        counts = {STEP_QUEUES[p].max_receive_count for p in PRIORITIES}
        assert len(counts) == 1, "one Settings.max_receive_count serves every step queue"
        return cls(urls, dlqs, counts.pop())

    def priority_of(self, url: str) -> str:
        for priority, known in self.urls.items():
            if known == url:
                return priority
        raise KeyError(url)


@dataclass
class EffectSinks:
    """Where the ending's outward effects land, as deployed: the run-ended events' bus (a
    rule copies every lambdagraph event to a capture queue the harness reads) and the
    approval state machine (moto records its executions). Made once per environment; a
    replay tells its own by run id."""

    bus_name: str
    capture_url: str
    state_machine_arn: str
    events: Any
    sfn: Any
    sqs: Any

    @classmethod
    def create(cls, env: Environment) -> EffectSinks:
        from functions.approvals import state_machine_definition
        from functions.webhooks.events import RUN_EVENTS_SOURCE

        suffix = uuid.uuid4().hex[:10]
        events, sfn, sqs = env.client("events"), env.client("stepfunctions"), env.sqs
        bus = f"lambdagraph-{suffix}"
        events.create_event_bus(Name=bus)
        capture_url = sqs.create_queue(QueueName=f"run-events-{suffix}")["QueueUrl"]
        capture_arn = sqs.get_queue_attributes(QueueUrl=capture_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.put_rule(
            Name="all-run-events",
            EventBusName=bus,
            EventPattern=json.dumps({"source": [RUN_EVENTS_SOURCE]}),
        )
        events.put_targets(
            Rule="all-run-events",
            EventBusName=bus,
            Targets=[{"Id": "capture", "Arn": capture_arn}],
        )
        arn = sfn.create_state_machine(
            name=f"approvals-{suffix}",
            definition=state_machine_definition(f"https://sqs.invalid/approvals-{suffix}"),
            roleArn="arn:aws:iam::123456789012:role/approvals",
            type="STANDARD",
        )["stateMachineArn"]
        return cls(bus, capture_url, arn, events, sfn, sqs)

    def run_events(self) -> dict[str, list[str]]:
        """Every run-ended event put since the last call: run id -> the statuses it carried."""
        seen: dict[str, list[str]] = {}
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.capture_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return seen
            for m in messages:
                detail = json.loads(m["Body"])["detail"]
                seen.setdefault(str(detail["run_id"]), []).append(str(detail["status"]))
            self.sqs.delete_message_batch(
                QueueUrl=self.capture_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )

    def executions(self) -> list[str]:
        """The names of the approval state machine's executions (one per approval id)."""
        names: list[str] = []
        kwargs: dict[str, Any] = {"stateMachineArn": self.state_machine_arn}
        while True:
            page = self.sfn.list_executions(**kwargs)
            names += [e["name"] for e in page["executions"]]
            if not page.get("nextToken"):
                return names
            kwargs["nextToken"] = page["nextToken"]


def _effect_violations(
    run: dict[str, Any],
    joined: Any,
    events: dict[str, list[str]],
    executions: list[str],
) -> list[str]:
    """A final run's outward effects: its run-ended event was put (a retried effect may put
    it again, with the same content: receivers de-duplicate by ``webhook-id``), and each
    approval it asked for has its record and exactly one state machine execution."""
    from functions.approvals.request import approval_id_for, is_approval

    ref = (run.get("metadata") or {}).get("client_ref")
    found: list[str] = []
    statuses = events.get(str(run["run_id"]), [])
    if not statuses:
        found.append(f"run {ref} ended {run['status']} but no run-ended event was put")
    elif set(statuses) != {run["status"]}:
        found.append(f"run {ref} ended {run['status']} but its events said {statuses}")
    if run["status"] != "success" or not isinstance(joined, dict):
        return found
    for interrupt in joined.get("__interrupt__") or []:
        if not is_approval(interrupt.get("value")) or not interrupt.get("id"):
            continue
        approval_id = approval_id_for(str(run["run_id"]), str(interrupt["id"]))
        started = executions.count(approval_id)
        if started != 1:
            found.append(f"run {ref}'s approval has {started} state machine executions")
    return found


class CrashStack(Stack):
    """The integration ``Stack`` (its ``api()`` drives the real API handler) on fresh tables,
    the deployed queues and the deployed lease (``Settings`` default)."""

    def __init__(
        self,
        env: Environment,
        *,
        payload_bucket: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        # Stack.__init__ is not called: its queues have no dead-letter queues.
        self.env = env
        self.dynamodb = env.dynamodb
        self.sqs = env.sqs
        suffix = uuid.uuid4().hex[:10]
        self.runtime_table = f"runtime-{suffix}"
        self.checkpoint_table = f"checkpoints-{suffix}"
        self.dynamodb.create_table(**RUNTIME_TABLE.create_table_request(self.runtime_table))
        self.dynamodb.create_table(**CHECKPOINT_TABLE.create_table_request(self.checkpoint_table))
        self.payload_bucket: str | None = None
        if payload_bucket:
            self.payload_bucket = f"payloads-{suffix}"
            env.client("s3").create_bucket(Bucket=self.payload_bucket)
        queues = env.queues
        self.queue_urls = queues.urls
        self.dlq_urls = queues.dlq_urls
        self.settings = Settings(
            runtime_table=self.runtime_table,
            checkpoint_table=self.checkpoint_table,
            queue_url_high=queues.urls["high"],
            queue_url_normal=queues.urls["normal"],
            queue_url_low=queues.urls["low"],
            dlq_url_high=queues.dlq_urls["high"],
            dlq_url_normal=queues.dlq_urls["normal"],
            dlq_url_low=queues.dlq_urls["low"],
            api_keys=KEY_A,
            checkpointer="dynamodb",
            join_timeout_s=0.3,
            join_poll_s=0.02,
            max_receive_count=queues.max_receive_count,
            # The ending's outward effects, as deployed: the run-ended event and, for an
            # approval interrupt, the approval's state machine execution.
            event_bus_name=env.sinks.bus_name,
            approval_state_machine_arn=env.sinks.state_machine_arn,
            payload_bucket=self.payload_bucket,
            **(settings or {}),
        )
        assert self.settings.lease_s == env.timings.lease_s, "the worker runs the deployed lease"
        self.boot()

    def boot(self) -> None:
        """A cold start: new clients, saver, graphs and services."""
        from functions.api_app import Services
        from functions.queues import StepQueues
        from functions.runs import RunService
        from functions.steps import StepWorker
        from functions.store import Store
        from functions.threads import ThreadService

        cold_start()
        self.store = Store(self.runtime_table, ttl_days=self.settings.ttl_days)
        self.runs = RunService(self.settings, self.store, StepQueues(self.settings))
        self.services = Services(threads=ThreadService(self.settings, self.store), runs=self.runs)
        self.worker = StepWorker(self.runs)

    def scan(self, table: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        while True:
            page = self.dynamodb.scan(**kwargs)
            items += [_plain(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def queue_counts(self, url: str) -> dict[str, int]:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return {k.removeprefix("ApproximateNumberOf"): int(v) for k, v in attributes.items()}

    def destroy(self) -> None:
        for table in (self.runtime_table, self.checkpoint_table):
            with contextlib.suppress(Exception):
                self.dynamodb.delete_table(TableName=table)
        if self.payload_bucket:
            s3 = self.env.client("s3")
            with contextlib.suppress(Exception):
                listed = s3.list_objects_v2(Bucket=self.payload_bucket).get("Contents", [])
                for item in listed:
                    s3.delete_object(Bucket=self.payload_bucket, Key=item["Key"])
                s3.delete_bucket(Bucket=self.payload_bucket)


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """A low-level DynamoDB item as plain values."""
    out: dict[str, Any] = {}
    for key, typed in item.items():
        (kind, value), *_ = typed.items()
        if kind == "N":
            number = float(value)
            out[key] = int(number) if number.is_integer() else number
        elif kind == "BOOL":
            out[key] = bool(value)
        elif kind == "NULL":
            out[key] = None
        elif kind == "B":
            out[key] = f"<{len(value)} bytes>"
        else:
            out[key] = value
    return out


# --- normalising and comparing outcomes ------------------------------------------------------

_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\b[0-9a-f]{32}\b"
)


def normalise(value: Any) -> Any:
    """Generated ids (uuids, 32-hex interrupt ids) renumbered by first appearance, so two
    outcomes compare by values and structure, and an id that recurs (an interrupt's id in
    the state and in ``__interrupt__``) must recur in the other too."""
    seen: dict[str, str] = {}

    def rename(match: re.Match[str]) -> str:
        return seen.setdefault(match.group(0).lower(), f"<id{len(seen) + 1}>")

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {
                (_ID.sub(rename, k) if isinstance(k, str) else k): walk(x) for k, x in v.items()
            }
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            return _ID.sub(rename, v)
        return v

    return walk(value)


def _short(v: Any) -> str:
    if isinstance(v, list) and all(isinstance(x, dict) and "ref" in x for x in v):
        return "[" + ", ".join(f"{x['ref']} {x.get('status')}" for x in v) + "]"  # runs
    if isinstance(v, dict) and "type" in v and "content" in v:
        return f"{v['type']}: {str(v['content'])[:40]!r}"  # a message
    if isinstance(v, list) and v and all(isinstance(x, dict) and "content" in x for x in v):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def diff(expected: Any, actual: Any, path: str = "", limit: int = 8) -> list[str]:
    """Where two outcomes differ, as ``path: expected X, got Y`` lines (at most ``limit``)."""
    out: list[str] = []

    def walk(e: Any, a: Any, p: str) -> None:
        if len(out) >= limit or e == a:
            return
        if isinstance(e, dict) and isinstance(a, dict):
            for key in list(e) + [k for k in a if k not in e]:
                if key not in a:
                    out.append(f"{p}.{key}: expected {_short(e[key])}, missing")
                elif key not in e:
                    out.append(f"{p}.{key}: unexpected {_short(a[key])}")
                else:
                    walk(e[key], a[key], f"{p}.{key}")
            return
        if isinstance(e, list) and isinstance(a, list) and len(e) == len(a):
            for i, (x, y) in enumerate(zip(e, a, strict=True)):
                walk(x, y, f"{p}[{i}]")
            return
        out.append(f"{p or '.'}: expected {_short(e)}, got {_short(a)}")

    walk(expected, actual, path)
    return out


# --- scenarios and replays -------------------------------------------------------------------


@dataclass
class Scenario:
    """A client script; ``setup`` runs first, fault-free and unrecorded (a precondition)."""

    name: str
    script: Callable[[Replay], None]
    setup: Callable[[Replay], None] | None = None
    # Checks on the fault-free outcome: the scenario does what its name says.
    expect: Callable[[dict[str, Any]], None] | None = None
    description: str = ""
    # Deployment settings of its own, on top of the crash stack's (e.g. model limits).
    settings: dict[str, Any] = field(default_factory=dict)
    # A payload bucket, as deployed: large run inputs (and checkpoints) go there.
    payload_bucket: bool = False
    # Checks on the fault-free run's AWS calls: the path the scenario is about was taken.
    expect_calls: Callable[[list[Call]], None] | None = None


class Stuck(Exception):
    """Recovery did not reach quiescence."""


class ClientGaveUp(Exception):
    """A client request kept failing."""


@dataclass
class InFlight:
    priority: str
    receipt: str
    visible_at: float
    body: dict[str, Any]
    receive_count: int


@dataclass
class Result:
    scenario: str
    plan: Plan
    calls: list[Call]
    outcome: dict[str, Any] | None = None
    violations: list[str] = field(default_factory=list)
    stuck: str | None = None
    error: str | None = None
    crashed: Call | None = None
    elapsed_sim_s: float = 0.0
    events: list[str] = field(default_factory=list)
    throttled: int = 0


class Replay:
    """One play of a scenario under a fault plan, on a fresh stack."""

    MAX_CLIENT_ATTEMPTS = 12

    def __init__(self, env: Environment, scenario: Scenario, plan: Plan) -> None:
        self.env = env
        self.scenario = scenario
        self.plan = plan
        self.faults = env.faults
        self.clock = env.clock
        self.timings = env.timings
        self.clock.reset()
        self.faults.reset(plan)
        self.stack = CrashStack(
            env, payload_bucket=scenario.payload_bucket, settings=scenario.settings
        )
        self.threads: list[str] = []
        self.refs: dict[str, tuple[str, str]] = {}  # client ref -> (thread id, run id)
        self.inflight: dict[str, InFlight] = {}
        # Messages that may be visible now, per queue (from the engine's own SendMessage
        # calls and the messages released here): only those queues are polled.
        self.visible: dict[str, int] = dict.fromkeys(PRIORITIES, 0)
        self.held: list[tuple[float, str, str]] = []  # delayed sends: (visible at, priority, body)
        self._absorbed_sent = 0
        self._absorbed_delayed = 0
        self.max_received: dict[str, int] = dict.fromkeys(PRIORITIES, 0)
        self.next_tick = self.clock.start + self.timings.housekeeping_every_s
        self.events: list[str] = []
        self.crashed: Call | None = None
        self._scripted: dict[tuple[str, int], int] = {}  # (ref, step) -> crash after n calls
        self._scripted_fired: set[tuple[str, int]] = set()
        self._deliveries = 0

    # --- bookkeeping ---------------------------------------------------------------------

    def log(self, text: str) -> None:
        self.events.append(f"t+{self.clock.elapsed():.0f}s {text}")

    def ref_of(self, run_id: str) -> str:
        for ref, (_, rid) in self.refs.items():
            if rid == run_id:
                return ref
        return run_id[:8]

    def run_id(self, ref: str) -> str:
        return self.refs[ref][1]

    def _crashed(self, inv: Invocation, what: str) -> None:
        call = inv.crashed_at
        if call is not None and self.plan.target == call.key:
            self.crashed = call
        how = call.name if call is not None else "in a thread"
        self.log(f"{what}: process died{' as scripted' if inv.scripted_fired else ''} ({how})")
        self.stack.boot()

    # --- invocations ---------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, *, ref: str = "", **kw: Any) -> Any:
        """One API invocation; the reply, or None if the process died."""
        where = f"api {method} {path}" + (f" [{ref}]" if ref else "")
        with self.faults.invocation(where) as inv:
            try:
                reply = self.stack.api(method, path, body, **kw)
            except Crash:
                self._crashed(inv, where)
                return None
            if inv.dead:  # died in a thread whose exception the code did not re-raise
                self._crashed(inv, where)
                return None
            return reply

    def housekeeping(self) -> None:
        with self.faults.invocation("housekeeping") as inv:
            try:
                result = self.stack.housekeeping()
                if inv.dead:
                    raise Crash("died in a thread")
                if result.get("requeued"):
                    self.log(f"housekeeping re-queued {result['requeued']}")
            except Crash:
                self._crashed(inv, "housekeeping")
            except Exception as exc:
                # A failed invocation (AWS errors): the next one runs on schedule.
                self.log(f"housekeeping failed: {type(exc).__name__}")

    def _record(self, priority: str, m: dict[str, Any]) -> dict[str, Any]:
        template = load_event("sqs_step_message.json")["Records"][0]
        record = json.loads(json.dumps(template))
        record.update(
            messageId=m["MessageId"],
            receiptHandle=m["ReceiptHandle"],
            body=m["Body"],
            attributes=m.get("Attributes", {}),
            md5OfBody=m["MD5OfBody"],
            eventSourceARN=f"arn:aws:sqs:us-east-1:123456789012:steps-{priority}",
        )
        return record

    def _invoke_worker(self, where: str, record: dict[str, Any], crash_after: int | None) -> str:
        """One step-worker invocation: "ok", "failed" (batch item failure) or "crashed"."""
        from functions.handlers import step_worker

        with self.faults.invocation(where, crash_after_calls=crash_after) as inv:
            try:
                result = step_worker.handler(
                    {"Records": [record]}, LambdaContext(), worker=self.stack.worker
                )
                if inv.dead:
                    raise Crash("died in a thread whose exception the code did not re-raise")
            except Crash:
                self._crashed(inv, where)
                return "stuck" if inv.scripted_fired else "crashed"
            except Exception as exc:
                # The handler itself failed: Lambda reports the whole batch failed.
                self.log(f"{where}: invocation failed ({type(exc).__name__}: {exc})")
                return "failed"
        return "failed" if result.get("batchItemFailures") else "ok"

    def deliver(self, priority: str, m: dict[str, Any]) -> None:
        """The event source mapping: hand the message to the worker; delete it if it
        succeeded; otherwise leave it to come back after the visibility timeout."""
        body = json.loads(m["Body"])
        ref, step = self.ref_of(str(body.get("run_id"))), int(body.get("step", 0))
        count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        where = f"worker {ref} step {step}" + (f" (receive {count})" if count > 1 else "")
        key = (ref, step)
        crash_after = self._scripted.get(key) if key not in self._scripted_fired else None
        record = self._record(priority, m)
        self._deliveries += 1
        if not self.plan.duplicates:
            outcomes = [self._invoke_worker(where, record, crash_after)]
        elif (
            crash_after is None and _hash_unit(self.plan.seed, "concurrent", self._deliveries) < 0.5
        ):
            outcomes = self._concurrently(where, record)
            where += " (twice, concurrently)"
        else:
            # A scripted crash (a stuck step) dies in the first copy; the second comes after,
            # and is the one that sticks if the first never got its claim (throttled away).
            first = self._invoke_worker(where, record, crash_after)
            again = None if first == "stuck" else crash_after
            outcomes = [first, self._invoke_worker(where + " (duplicate)", record, again)]
            where += " (twice, one after the other)"
        if "stuck" in outcomes:
            # The scripted crash fired (the sweep's crash, if it came first, leaves it armed).
            self._scripted_fired.add(key)
        self.log(f"{where}: {'/'.join(outcomes)}")
        if all(o == "ok" for o in outcomes):
            self.stack.sqs.delete_message(
                QueueUrl=self.stack.queue_urls[priority], ReceiptHandle=m["ReceiptHandle"]
            )
            self.inflight.pop(m["MessageId"], None)

    def _concurrently(self, where: str, record: dict[str, Any]) -> list[str]:
        outcomes = ["", ""]
        barrier = threading.Barrier(2)

        def work(i: int) -> None:
            barrier.wait()
            outcomes[i] = self._invoke_worker(
                where + (" (duplicate, concurrent)" if i else " (concurrent)"), record, None
            )

        workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        return outcomes

    # --- queues and time -----------------------------------------------------------------

    def _absorb(self) -> None:
        """Take note of the step messages the engine sent since the last look."""
        queues = self.env.queues_known
        for url, _body in self.faults.sent[self._absorbed_sent :]:
            self.visible[queues.priority_of(url)] += 1
        self._absorbed_sent = len(self.faults.sent)
        for url, body, delay in self.faults.delayed[self._absorbed_delayed :]:
            self.held.append((self.clock.now() + delay, queues.priority_of(url), body))
        self._absorbed_delayed = len(self.faults.delayed)

    def _release_due(self) -> None:
        """Messages whose visibility timeout (or delay) passed on the simulated clock become
        visible."""
        self._absorb()
        now = self.clock.now()
        for message_id, flight in list(self.inflight.items()):
            if flight.visible_at <= now:
                self.stack.sqs.change_message_visibility(
                    QueueUrl=self.stack.queue_urls[flight.priority],
                    ReceiptHandle=flight.receipt,
                    VisibilityTimeout=0,
                )
                del self.inflight[message_id]
                self.visible[flight.priority] += 1
        for entry in [h for h in self.held if h[0] <= now]:
            self.held.remove(entry)
            _, priority, body = entry
            self.stack.sqs.send_message(QueueUrl=self.stack.queue_urls[priority], MessageBody=body)
            self.visible[priority] += 1

    def _receive(self) -> tuple[str, dict[str, Any]] | None:
        """The next visible step message, high > normal > low."""
        self._absorb()
        for priority in PRIORITIES:
            if self.visible[priority] <= 0:
                continue
            got = self.stack.sqs.receive_message(
                QueueUrl=self.stack.queue_urls[priority],
                MaxNumberOfMessages=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                # Nothing after all (SQS moved a message received maxReceiveCount times to
                # the DLQ instead of delivering it).
                self.visible[priority] = 0
                continue
            self.visible[priority] -= 1
            m = got[0]
            received = int(m["Attributes"].get("ApproximateReceiveCount", 1))
            self.max_received[priority] = max(self.max_received[priority], received)
            self.inflight[m["MessageId"]] = InFlight(
                priority,
                m["ReceiptHandle"],
                self.clock.now() + STEP_QUEUES[priority].visibility_timeout_s,  # type: ignore[index]
                json.loads(m["Body"]),
                int(m["Attributes"].get("ApproximateReceiveCount", 1)),
            )
            return priority, m
        return None

    def _tick_due(self) -> None:
        while self.next_tick <= self.clock.now():
            self.next_tick += self.timings.housekeeping_every_s
            self.housekeeping()

    def active_runs(self) -> list[dict[str, Any]]:
        return [
            i
            for i in self.stack.scan(self.stack.runtime_table)
            if str(i.get("sk", "")).startswith("RUN#") and i.get("status") in ACTIVE
        ]

    def _fingerprint(self) -> str:
        """The state, leases and timestamps aside: unchanged for long = nothing will change."""
        items = [
            {k: v for k, v in i.items() if k not in _VOLATILE}
            for i in self.stack.scan(self.stack.runtime_table)
        ]
        items.sort(key=lambda i: (str(i.get("pk")), str(i.get("sk"))))
        checkpoints = self.stack.dynamodb.scan(
            TableName=self.stack.checkpoint_table, Select="COUNT", ConsistentRead=True
        )["Count"]
        flights = sorted(
            (json.dumps(f.body, sort_keys=True), f.receive_count) for f in self.inflight.values()
        )
        return json.dumps([items, checkpoints, flights, self.held], sort_keys=True, default=str)

    def settle(self, until: Callable[[], bool] | None = None) -> None:
        """Deliver visible messages and advance the simulated clock to the next interesting
        time (a message's visibility, a housekeeping tick) until quiescent — or, with
        ``until``, until it holds. Raises ``Stuck`` at the cap."""
        stall_print: str | None = None
        stall_since = self.clock.now()
        while True:
            self._release_due()
            self._tick_due()
            if until is not None and until():
                return
            got = self._receive()
            if got is not None:
                self.deliver(*got)
                continue
            if not self.inflight and not self.held and not self.active_runs():
                return  # quiescent
            if self.clock.elapsed() >= CAP_S:
                raise Stuck(f"not quiescent after {CAP_S / 3600:.0f} simulated hours")
            if not self.inflight and not self.held:
                # Only housekeeping can move things now: watch for a state that never changes.
                fingerprint = self._fingerprint()
                if fingerprint != stall_print:
                    stall_print, stall_since = fingerprint, self.clock.now()
                elif self.clock.now() - stall_since >= STALL_S:
                    raise Stuck(
                        f"no progress for {STALL_S:.0f} simulated seconds "
                        f"(at t+{self.clock.elapsed():.0f}s)"
                    )
            else:
                stall_print = None
            upcoming = [f.visible_at for f in self.inflight.values()]
            upcoming += [h[0] for h in self.held] + [self.next_tick]
            self.clock.advance_to(min(upcoming))

    # --- what a scenario script calls --------------------------------------------------------

    def create_thread(self, thread_id: str, **body: Any) -> None:
        """POST /threads with a client-chosen id; on failure, look, then retry if missing."""
        self.threads.append(thread_id)
        body = {**body, "thread_id": thread_id, "if_exists": "do_nothing"}
        for _ in range(self.MAX_CLIENT_ATTEMPTS):
            reply = self.api("POST", "/threads", body)
            if reply is not None and reply.status == 200:
                return
            if reply is not None and reply.status < 500:
                raise ClientGaveUp(f"POST /threads answered {reply.status}: {reply.body}")
            check = self.api("GET", f"/threads/{thread_id}")
            if check is not None and check.status == 200:
                return
        raise ClientGaveUp(f"could not create thread {thread_id}")

    def create_run(self, thread_id: str, ref: str, **body: Any) -> None:
        """POST /threads/{tid}/runs tagged with a client reference; after a failed request
        the client lists the thread's runs and retries only if its run is not there."""
        body.setdefault("assistant_id", "support")
        body["metadata"] = {**body.get("metadata", {}), "client_ref": ref}
        path = f"/threads/{thread_id}/runs"
        for _ in range(self.MAX_CLIENT_ATTEMPTS):
            reply = self.api("POST", path, body, ref=ref)
            if reply is not None and reply.status == 200:
                self.refs[ref] = (thread_id, reply.body["run_id"])
                return
            if reply is not None and reply.status < 500:
                raise ClientGaveUp(f"POST {path} [{ref}] answered {reply.status}: {reply.body}")
            self.log(f"client: POST {path} [{ref}] failed; looking for its run")
            for _ in range(self.MAX_CLIENT_ATTEMPTS):
                listed = self.api("GET", path, query={"limit": "100"}, ref=f"{ref}?")
                if listed is not None and listed.status == 200:
                    break
            else:
                raise ClientGaveUp(f"could not list runs of {thread_id}")
            mine = [r for r in listed.body if (r.get("metadata") or {}).get("client_ref") == ref]
            if mine:
                self.refs[ref] = (thread_id, mine[-1]["run_id"])
                return
        raise ClientGaveUp(f"could not create run {ref}")

    def update_state(self, thread_id: str, **body: Any) -> None:
        """POST /threads/{tid}/state (used as a precondition, fault-free)."""
        reply = self.api("POST", f"/threads/{thread_id}/state", body)
        if reply is None or reply.status != 200:
            raise ClientGaveUp(f"update_state failed: {reply and reply.body}")

    def cancel(self, ref: str) -> None:
        """POST .../cancel; after a failed request, retry while the run is still active."""
        thread_id, run_id = self.refs[ref]
        path = f"/threads/{thread_id}/runs/{run_id}"
        for _ in range(self.MAX_CLIENT_ATTEMPTS):
            reply = self.api("POST", f"{path}/cancel", ref=ref)
            if reply is not None and reply.status in (200, 202, 404):
                return
            check = self.api("GET", path, ref=f"{ref}?")
            if check is not None and (check.status == 404 or check.body["status"] not in ACTIVE):
                return
        raise ClientGaveUp(f"could not cancel {ref}")

    def stick(self, ref: str, step: int, *, after_calls: int = 1) -> None:
        """Script a stuck step: the first delivery of (ref, step) whose claim succeeds dies
        after its first ``after_calls`` AWS calls (the claim) — part of the scenario,
        fault-free run included. A delivery whose claim failed (throttled past botocore's
        retries, say) leaves it armed for the next."""
        self._scripted[(ref, step)] = after_calls

    def stuck_fired(self, ref: str, step: int) -> Callable[[], bool]:
        return lambda: (ref, step) in self._scripted_fired

    def sent(self, ref: str, step: int) -> Callable[[], bool]:
        """True once the engine has sent a step message ``step`` (or later) for run ``ref``."""

        def check() -> bool:
            if ref not in self.refs:
                return False
            run_id = self.run_id(ref)
            return any(
                b.get("run_id") == run_id and int(b.get("step", 0)) >= step
                for _, b in self.faults.sent
            )

        return check

    # --- outcome -------------------------------------------------------------------------

    def observe(self) -> tuple[dict[str, Any], list[str]]:
        """The outcome a client sees (normalised) and the invariants that do not hold."""
        self.faults.enabled = False
        outcome: dict[str, Any] = {}
        violations: list[str] = []
        sinks = self.env.sinks
        events = sinks.run_events()
        executions = sinks.executions()
        for thread_id in self.threads:
            thread = self.stack.api("GET", f"/threads/{thread_id}").body
            state = self.stack.api("GET", f"/threads/{thread_id}/state").body
            history = self.stack.api("POST", f"/threads/{thread_id}/history", {"limit": 1000}).body
            listed = self.stack.api(
                "GET", f"/threads/{thread_id}/runs", query={"limit": "100"}
            ).body
            runs = []
            for run in reversed(listed):
                path = f"/threads/{thread_id}/runs/{run['run_id']}"
                joined = self.stack.api("GET", f"{path}/join").body
                runs.append(
                    {
                        "ref": (run.get("metadata") or {}).get("client_ref"),
                        "status": run["status"],
                        "error": run.get("error"),
                        "values": joined,
                    }
                )
                if run["status"] in ACTIVE:
                    violations.append(f"run {runs[-1]['ref']} is still {run['status']}")
                else:
                    violations += _effect_violations(run, joined, events, executions)
            outcome[thread_id] = {
                "status": thread["status"],
                "values": thread.get("values"),
                "interrupts": thread.get("interrupts"),
                "state": {
                    "values": state.get("values"),
                    "next": state.get("next"),
                    "interrupts": state.get("interrupts"),
                    "tasks": [
                        {"name": t.get("name"), "interrupts": t.get("interrupts")}
                        for t in state.get("tasks") or []
                    ],
                },
                "checkpoints": len(history),
                "history": [
                    [
                        (h.get("metadata") or {}).get("source"),
                        (h.get("metadata") or {}).get("step"),
                        h.get("next"),
                    ]
                    for h in history
                ],
                "runs": runs,
            }
        for item in self.stack.scan(self.stack.runtime_table):
            if item.get("sk") == "THREAD" and item.get("active_run_id"):
                holder = self.ref_of(str(item["active_run_id"]))
                violations.append(f"thread {item.get('thread_id')} still held by run {holder}")
        for priority, url in self.stack.dlq_urls.items():
            if (
                self.plan != Plan()
                and self.max_received[priority] < self.env.queues_known.max_receive_count
            ):
                # SQS moves a message to the DLQ only when it is received again after
                # maxReceiveCount receives, and every receive is the harness's.
                continue
            counts = self.stack.queue_counts(url)
            if any(counts.values()):
                self.env.queues_dirty = True
                bodies = self.stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
                    "Messages", []
                )
                shown = [self._message_text(json.loads(m["Body"])) for m in bodies]
                violations.append(f"{priority} DLQ holds {counts}: {', '.join(shown)}")
        # Quiescent, so nothing is visible, in flight or held in the step queues.
        return normalise(outcome), violations

    def _message_text(self, body: dict[str, Any]) -> str:
        return f"{self.ref_of(str(body.get('run_id')))} step {body.get('step')}"

    def records(self) -> str:
        """The runtime records, for a report: one line each."""
        lines = []
        now = self.clock.now()
        for item in self.stack.scan(self.stack.runtime_table):
            sk = str(item.get("sk", ""))
            if sk == "THREAD":
                keep = ("status", "active_run_id", "queued_runs")
                name = f"thread {item.get('thread_id')}"
            elif sk.startswith("RUN#"):
                keep = ("status", "queued", "claimed_step", "done_step", "cancel", "started")
                name = f"run {self.ref_of(str(item.get('run_id')))}"
            else:
                keep = ()
                name = sk
            fields = {k: item[k] for k in keep if k in item}
            if "active_run_id" in fields:
                fields["active_run_id"] = self.ref_of(str(fields["active_run_id"]))
            if "lease_until" in item:
                fields["lease"] = f"{float(item['lease_until']) - now:+.0f}s"
            lines.append(f"{name} {json.dumps(fields, default=str)}")
        for f in self.inflight.values():
            lines.append(
                f"in flight: {self._message_text(f.body)} ({f.priority}, visible in "
                f"{f.visible_at - now:.0f}s, received {f.receive_count}x)"
            )
        return "; ".join(lines)

    # --- the whole play ------------------------------------------------------------------

    def play(self) -> Result:
        result = Result(self.scenario.name, self.plan, [])
        try:
            if self.scenario.setup is not None:
                self.scenario.setup(self)
                self.settle()
            # From here on the calls are the scenario's (indexed) and faults apply.
            self.faults.enabled = True
            self.scenario.script(self)
            self.settle()
            result.calls = list(self.faults.calls)
            result.outcome, result.violations = self.observe()
        except Stuck as exc:
            self.env.queues_dirty = True
            result.calls = list(self.faults.calls)
            result.stuck = f"{exc}; {self.records()}"
        except ClientGaveUp as exc:
            self.env.queues_dirty = True
            result.calls = list(self.faults.calls)
            result.error = f"client gave up: {exc}; {self.records()}"
        except BaseException:
            self.env.queues_dirty = True
            raise
        finally:
            self.faults.enabled = False
            result.crashed = self.crashed
            result.elapsed_sim_s = self.clock.elapsed()
            result.events = self.events
            result.throttled = self.faults.throttled
        return result


# --- exploration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """A crash point: dying just before call ``index`` was sent, or just after it was answered."""

    index: int
    mode: str

    def __str__(self) -> str:
        return f"{self.mode} #{self.index}"


def crash_points(calls: list[Call]) -> list[Point]:
    return [Point(c.index, mode) for c in calls for mode in ("before", "after")]


def point_classes(calls: list[Call]) -> list[list[Point]]:
    """Crash points grouped by what they leave behind, in call order.

    What a crash leaves is the invocation that died and the writes it had made: reads change
    nothing and a dead process keeps nothing, so the points of an invocation between two of
    its writes are one class (dying after a write = dying before the next call; dying after a
    read = dying before it). That holds along the invocation's own thread; a call from a
    LangGraph worker thread may run in another order in a replay, so its points (and the
    points around it) stand alone."""
    classes: list[list[Point]] = []
    last: tuple[Any, ...] | None = None
    writes: dict[int, int] = {}
    for call in calls:
        done = writes.get(call.invocation, 0)
        for mode in ("before", "after"):
            if mode == "after" and call.writes:
                done += 1
            key = (call.invocation, done) if call.main_thread else None
            if key is not None and key == last:
                classes[-1].append(Point(call.index, mode))
            else:
                classes.append([Point(call.index, mode)])
            last = key
        writes[call.invocation] = done
        if not call.main_thread:
            last = None
    return classes


@dataclass
class Failure:
    scenario: str
    plan: Plan
    call: Call | None
    symptom: list[str]
    also: list[Point] = field(default_factory=list)  # equivalent points this replay stands for

    def headline(self) -> str:
        where = f" at {self.call}" if self.call else ""
        also = f" (and the equivalent {', '.join(map(str, self.also))})" if self.also else ""
        return f"[{self.scenario}] {self.plan}{where}{also}"

    def __str__(self) -> str:
        return self.headline() + "".join(f"\n      {s}" for s in self.symptom)


@dataclass
class Exploration:
    scenario: str
    calls: list[Call]
    baseline: dict[str, Any] | None
    points: int = 0  # crash points (or seeds) explored
    replays: int = 0  # replays made for them
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed_points(self) -> int:
        return sum(1 + len(f.also) for f in self.failures if f.plan.crash_at is not None)

    def summary(self) -> str:
        return (
            f"{self.scenario}: {len(self.calls)} AWS calls, {self.points} explored in "
            f"{self.replays} replays, {len(self.failures)} failed, {self.seconds:.0f}s"
        )

    def report(self, limit: int = 400) -> str:
        lines = [self.summary()]
        lines += [f"  {failure}" for failure in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more")
        return "\n".join(lines)


def _judge(
    scenario: Scenario, baseline: dict[str, Any] | None, result: Result, call: Call | None
) -> Failure | None:
    symptom: list[str] = []
    if call is not None and result.plan.crash_at is not None and result.crashed is None:
        symptom.append(
            "harness: the replay never made that call (the scenario did not replay the same way)"
        )
    if result.stuck:
        symptom.append(f"stuck: {result.stuck}")
    if result.error:
        symptom.append(result.error)
    if result.outcome is not None:
        symptom += [f"invariant: {v}" for v in result.violations]
        if baseline is not None:
            symptom += [f"differs: {d}" for d in diff(baseline, result.outcome)]
    if not symptom:
        return None
    if result.plan.crash_at is not None:
        trail = [e for e in result.events if "died" in e or "failed" in e or "client" in e][:6]
    else:
        trail = result.events[:24]
    if trail:
        symptom.append("events: " + " | ".join(trail))
    return Failure(scenario.name, result.plan, call, symptom)


def record(env: Environment, scenario: Scenario) -> tuple[Result, list[Failure]]:
    """The fault-free play: calls, outcome, and whatever is already wrong with it."""
    result = Replay(env, scenario, Plan()).play()
    failures = []
    failure = _judge(scenario, None, result, None)
    if failure is not None:
        failures.append(failure)
    elif result.outcome is not None:
        try:
            if scenario.expect is not None:
                scenario.expect(result.outcome)
            if scenario.expect_calls is not None:
                scenario.expect_calls(result.calls)
        except AssertionError as exc:
            failures.append(Failure(scenario.name, result.plan, None, [f"fault-free run: {exc}"]))
    return result, failures


def _signature(result: Result) -> str:
    """What a replay ended with, for comparing equivalent crash points."""
    stuck = (result.stuck or "").split(";", 1)[0]
    return json.dumps([result.outcome, result.violations, stuck, result.error], default=str)


def explore_crashes(
    env: Environment,
    scenario: Scenario,
    *,
    every_point: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Exploration:
    """Replay ``scenario`` dying before/after each call of its fault-free run.

    By default one replay per class of equivalent crash points (``point_classes``) stands for
    the class; ``every_point`` replays each point on its own and checks that equivalent
    points did end alike (the reduction's premise)."""
    started = time.perf_counter()
    baseline, failures = record(env, scenario)
    exploration = Exploration(scenario.name, baseline.calls, baseline.outcome, failures=failures)
    if baseline.outcome is None:
        exploration.seconds = time.perf_counter() - started
        return exploration
    calls = baseline.calls
    for members in point_classes(calls):
        replayed = members if every_point else members[:1]
        signatures: dict[str, list[Point]] = {}
        for point in replayed:
            plan = Plan(crash_at=point.index, mode=point.mode, target=calls[point.index].key)
            result = Replay(env, scenario, plan).play()
            exploration.replays += 1
            signatures.setdefault(_signature(result), []).append(point)
            failure = _judge(scenario, baseline.outcome, result, calls[point.index])
            if failure is not None:
                if not every_point:
                    failure.also = members[1:]
                exploration.failures.append(failure)
                if progress is not None:
                    progress(failure.headline())
        if len(signatures) > 1:
            groups = " vs ".join("/".join(map(str, g)) for g in signatures.values())
            exploration.failures.append(
                Failure(
                    scenario.name,
                    Plan(members[0].index, members[0].mode, calls[members[0].index].key),
                    calls[members[0].index],
                    [f"harness: equivalent crash points ended differently: {groups}"],
                )
            )
        exploration.points += len(members)
    env.explored += exploration.points
    exploration.seconds = time.perf_counter() - started
    return exploration


def explore_noise(
    env: Environment,
    scenario: Scenario,
    *,
    seeds: list[int] | range,
    throttle: float = 0.1,
    duplicates: bool = True,
) -> Exploration:
    """Replay ``scenario`` with throttling and duplicated deliveries, once per seed."""
    started = time.perf_counter()
    baseline, failures = record(env, scenario)
    exploration = Exploration(scenario.name, baseline.calls, baseline.outcome, failures=failures)
    if baseline.outcome is None:
        exploration.seconds = time.perf_counter() - started
        return exploration
    for seed in seeds:
        plan = Plan(throttle=throttle, duplicates=duplicates, seed=seed)
        result = Replay(env, scenario, plan).play()
        exploration.points += 1
        exploration.replays += 1
        failure = _judge(scenario, baseline.outcome, result, None)
        if failure is not None:
            failure.symptom.append(f"throttled requests: {result.throttled}")
            exploration.failures.append(failure)
    exploration.seconds = time.perf_counter() - started
    return exploration

"""Lambda invocations as the local stack runs them: a deadline, and death that sticks.

Lambda kills an invocation at its function timeout, and an execution environment that
crashed makes no further calls. A Python thread cannot be killed, so the local stack does
the next best thing:

- each invocation runs on its own thread; the caller waits for it until the function timeout
  and then treats it as dead (``run_invocation``), as Lambda does;
- every AWS call a handler makes passes a botocore hook (``install_aws_call_hook``, on boto3's
  default session, from which ``functions.aws`` and the checkpointer create their clients).
  In an invocation that is past its deadline, or that the fault injector crashed, the hook
  raises ``InvocationKilled`` — a ``BaseException``, so no ``except Exception`` in a handler
  can swallow it — before the call is sent. A dead invocation's thread may go on computing;
  it can no longer touch AWS.

The invocation travels in a ``ContextVar``: calls made from threads that copy the context
(LangGraph's executor does, for checkpoint writes) are covered too. Threads started without
the context (plain ``threading.Thread``, s3transfer's pool) are not.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.local.faults import FaultInjector

_CURRENT: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "lambdagraph_local_invocation", default=None
)
# Key of the call index in botocore's per-call request context (shared by before/after-call).
_CALL_INDEX = "lambdagraph_local_call_index"


class InvocationKilled(BaseException):
    """The invocation is dead (timed out or crashed): it may not make another AWS call.

    A BaseException on purpose, like ``SystemExit``: a handler's ``except Exception`` must not
    keep a dead invocation going.
    """


class InvocationTimedOut(InvocationKilled):
    """The invocation ran past its function timeout (Lambda: "Task timed out")."""


class InjectedCrash(InvocationKilled):
    """The fault injector killed the invocation at an AWS call (``LAMBDAGRAPH_FAULTS=crash=p``)."""


@dataclass(frozen=True)
class CrashPoint:
    """Where an invocation dies: at its ``call``-th AWS call (0-based), before it or just after."""

    call: int
    after: bool

    def describe(self) -> str:
        return f"{'after' if self.after else 'before'} AWS call #{self.call + 1}"


class Invocation:
    """One handler invocation: its deadline, its AWS calls so far, and how it died (if it did)."""

    def __init__(
        self,
        function_name: str,
        request_id: str,
        deadline: float,
        *,
        faults: FaultInjector | None = None,
        crash_at: CrashPoint | None = None,
    ) -> None:
        self.function_name = function_name
        self.request_id = request_id
        # time.monotonic() at which the function timeout strikes.
        self.deadline = deadline
        self.faults = faults
        self.crash_at = crash_at
        self._lock = threading.Lock()
        self._calls = 0
        self._killed: InvocationKilled | None = None

    @property
    def calls(self) -> int:
        """AWS calls started so far."""
        with self._lock:
            return self._calls

    @property
    def killed(self) -> InvocationKilled | None:
        with self._lock:
            return self._killed

    def kill(self, reason: InvocationKilled) -> bool:
        """Mark the invocation dead (the first reason sticks); True if this call killed it."""
        with self._lock:
            if self._killed is not None:
                return False
            self._killed = reason
            return True

    def check_alive(self) -> None:
        """Raise the reason it died if it is dead or past its deadline."""
        if self.killed is None and time.monotonic() >= self.deadline:
            self.kill(InvocationTimedOut(f"{self.function_name} {self.request_id} timed out"))
        killed = self.killed
        if killed is not None:
            # A fresh instance each time: one exception object raised in several threads
            # would share (and grow) one traceback.
            raise type(killed)(*killed.args)

    def start_call(self) -> int:
        with self._lock:
            index = self._calls
            self._calls += 1
            return index

    def crash(self, where: str) -> None:
        """Die here (the injected crash): count it once and raise ``InjectedCrash``."""
        if self.kill(InjectedCrash(f"injected crash {where}")) and self.faults is not None:
            self.faults.count("crash")
        self.check_alive()


def current_invocation() -> Invocation | None:
    return _CURRENT.get()


@dataclass
class Outcome:
    """How an invocation ended: a result, an exception the handler raised, or death."""

    result: Any = None
    error: Exception | None = None
    killed: InvocationKilled | None = None

    @property
    def died(self) -> bool:
        return self.killed is not None


def run_invocation(
    handler: Callable[[dict[str, Any], Any], Any],
    event: dict[str, Any],
    context: Any,
    invocation: Invocation,
    *,
    thread_name: str,
) -> Outcome:
    """Run ``handler(event, context)`` on its own thread until it returns or its deadline.

    Past the deadline the invocation is killed (its thread may run on, but can no longer make
    AWS calls) and the outcome says so, as Lambda reports "Task timed out".
    """
    outcome = Outcome()
    finished = threading.Event()

    def target() -> None:
        _CURRENT.set(invocation)
        try:
            outcome.result = handler(event, context)
        except InvocationKilled as exc:
            invocation.kill(exc)
        except Exception as exc:
            outcome.error = exc
        finally:
            finished.set()

    thread = threading.Thread(target=target, name=thread_name, daemon=True)
    thread.start()
    if not finished.wait(max(0.0, invocation.deadline - time.monotonic())):
        invocation.kill(InvocationTimedOut(f"{invocation.function_name} timed out"))
    # Dead is dead, even if the handler returned normally after something swallowed the kill
    # (the hook keeps raising it at every AWS call, so nothing reached AWS after it).
    outcome.killed = invocation.killed
    return outcome


# --- the botocore hook -----------------------------------------------------------------------


def _before_call(context: dict[str, Any] | None = None, **_: Any) -> None:
    invocation = _CURRENT.get()
    if invocation is None:
        return
    invocation.check_alive()
    index = invocation.start_call()
    if context is not None:
        context[_CALL_INDEX] = index
    crash = invocation.crash_at
    if crash is not None and not crash.after and index == crash.call:
        invocation.crash(crash.describe())


def _before_send(request: Any = None, event_name: str = "", **_: Any) -> Any:
    invocation = _CURRENT.get()
    if invocation is None:
        return None
    # Every HTTP attempt, retries included: a retry after the deadline is not sent either.
    invocation.check_alive()
    if invocation.faults is None:
        return None
    # event_name is "before-send.<service-id>.<Operation>".
    _event, service_id, operation = [*event_name.split("."), "", ""][:3]
    return invocation.faults.throttle(service_id, operation, request)


def _after_call(http_response: Any = None, context: dict[str, Any] | None = None, **_: Any) -> None:
    invocation = _CURRENT.get()
    if invocation is None:
        return
    invocation.check_alive()
    crash = invocation.crash_at
    index = (context or {}).get(_CALL_INDEX)
    if crash is None or not crash.after or index != crash.call:
        return
    if getattr(http_response, "status_code", 500) >= 300:
        # "Just after it succeeded": this one failed, so die after the next one instead.
        invocation.crash_at = CrashPoint(crash.call + 1, after=True)
        return
    invocation.crash(crash.describe())


_HOOKS: tuple[tuple[str, Callable[..., Any], str], ...] = (
    ("before-call", _before_call, "lambdagraph-local-before-call"),
    ("before-send", _before_send, "lambdagraph-local-before-send"),
    ("after-call", _after_call, "lambdagraph-local-after-call"),
)


def install_aws_call_hook(session: Any = None) -> None:
    """Register the hook on ``session`` (default: boto3's default session); idempotent.

    Clients copy their session's handlers when they are created, so this must run before the
    handlers create theirs (the local stack installs it before loading them). The hook does
    nothing outside an invocation, so other clients of the process are untouched.
    """
    if session is None:
        import boto3

        session = boto3._get_default_session()
    for event, handler, unique_id in _HOOKS:
        session.events.register(event, handler, unique_id=unique_id)

"""Execution environments for the API handler, as Lambda keeps them: one event at a time each.

Powertools' REST resolver keeps the current event and the appended context in shared state
(``BaseRouter.current_event``, ``app.context``), which is right on Lambda, where one
execution environment never handles two events at once. So locally, too, an environment
handles one event at a time, and concurrency comes from more environments:

- the first environment lives in the stack's own process (warm from the start);
- when it is busy (a ``join`` waiting for a run, say), the next request goes to another
  environment: a separate Python process started on demand (a cold start, as on Lambda),
  kept warm afterwards, up to ``max_environments`` in all;
- with one environment allowed (or no importable handler path), requests simply queue.

Other environments are separate processes, so they share nothing in memory with the stack:
they reach moto over HTTP like every AWS client. A graph that checkpoints in memory
(``LAMBDAGRAPH_CHECKPOINTER=memory``) needs the single environment.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import signal
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from infra.local.lambda_context import LocalLambdaContext

log = logging.getLogger(__name__)

Event = dict[str, Any]


class HandlerFailed(RuntimeError):
    """The handler raised in another environment (the message carries its traceback)."""


class EnvironmentDied(RuntimeError):
    """An environment's process ended while it handled an event."""


class _Environment(Protocol):
    def invoke(self, event: Event) -> Any: ...

    def close(self) -> None: ...


def load_handler_path(path: str) -> Any:
    """The callable ``module.attribute`` names."""
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


class _InProcessEnvironment:
    def __init__(self, handler: Any, function_name: str, timeout_s: float, region: str) -> None:
        self._handler = handler
        self._function_name = function_name
        self._timeout_s = timeout_s
        self._region = region

    def invoke(self, event: Event) -> Any:
        context = LocalLambdaContext(self._function_name, self._timeout_s, region=self._region)
        return self._handler(event, context)

    def close(self) -> None:
        return


class _ProcessEnvironment:
    def __init__(
        self,
        handler_path: str,
        function_name: str,
        timeout_s: float,
        region: str,
        readable_logs: bool,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_environment_main,
            args=(child, handler_path, function_name, timeout_s, region, readable_logs),
            name=f"{function_name}-environment",
            daemon=True,
        )
        self._process.start()
        child.close()

    def invoke(self, event: Event) -> Any:
        try:
            self._conn.send(event)
            kind, payload = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            raise EnvironmentDied(
                f"API environment process ended (exit code {self._process.exitcode})"
            ) from exc
        if kind == "error":
            raise HandlerFailed(f"API handler raised in another environment:\n{payload}")
        return payload

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except (BrokenPipeError, ConnectionResetError):
                # It ended between the check and the send: nothing left to ask.
                log.debug("API environment already gone")
        self._process.join(5.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5.0)
        self._conn.close()


def _environment_main(
    conn: Connection,
    handler_path: str,
    function_name: str,
    timeout_s: float,
    region: str,
    readable_logs: bool,
) -> None:
    """A process-backed environment: import the handler once, then one event at a time."""
    # Ctrl-C reaches the whole process group; the stack stops its environments itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handler = load_handler_path(handler_path)
    if readable_logs:
        from infra.local.logs import use_readable_powertools_logs

        use_readable_powertools_logs()
    environment = _InProcessEnvironment(handler, function_name, timeout_s, region)
    while True:
        try:
            event = conn.recv()
        except EOFError:
            return
        if event is None:
            return
        try:
            result = environment.invoke(event)
        except Exception:
            conn.send(("error", traceback.format_exc()))
            continue
        conn.send(("ok", result))


class EnvironmentPool:
    """Hands each event to an idle environment, starting one on demand (see module doc)."""

    def __init__(
        self,
        handler: Any,
        *,
        handler_path: str | None,
        max_environments: int,
        function_name: str,
        timeout_s: float,
        region: str,
        readable_logs: bool = False,
    ) -> None:
        if max_environments < 1:
            raise ValueError("max_environments must be at least 1")
        self._local = _InProcessEnvironment(handler, function_name, timeout_s, region)
        self._handler_path = handler_path
        self._max_processes = max_environments - 1 if handler_path else 0
        self._function_name = function_name
        self._timeout_s = timeout_s
        self._region = region
        self._readable_logs = readable_logs
        self._changed = threading.Condition()
        self._idle: list[_Environment] = [self._local]
        self._processes: list[_ProcessEnvironment] = []
        self._starting = 0
        self._closed = False

    @property
    def process_count(self) -> int:
        with self._changed:
            return len(self._processes)

    def invoke(self, event: Event, started: Callable[[], None] | None = None) -> Any:
        """Handle ``event`` in an idle environment (waiting for one); ``started`` is called
        when one has taken it."""
        environment = self._checkout()
        if started is not None:
            started()
        healthy = True
        try:
            return environment.invoke(event)
        except EnvironmentDied:
            healthy = False
            raise
        finally:
            self._checkin(environment, healthy)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            processes, self._processes = self._processes, []
            self._changed.notify_all()
        for process in processes:
            process.close()

    def _checkout(self) -> _Environment:
        with self._changed:
            while True:
                if self._closed:
                    raise RuntimeError("the API environments are stopped")
                if self._idle:
                    # The in-process environment first: warm, and no pipe to cross.
                    chosen = self._local if self._local in self._idle else self._idle[-1]
                    self._idle.remove(chosen)
                    return chosen
                if len(self._processes) + self._starting < self._max_processes:
                    self._starting += 1
                    break
                self._changed.wait()
        assert self._handler_path is not None
        try:
            started = _ProcessEnvironment(
                self._handler_path,
                self._function_name,
                self._timeout_s,
                self._region,
                self._readable_logs,
            )
        finally:
            with self._changed:
                self._starting -= 1
                self._changed.notify_all()
        with self._changed:
            self._processes.append(started)
        log.info("started API environment %d (cold start)", len(self._processes) + 1)
        return started

    def _checkin(self, environment: _Environment, healthy: bool) -> None:
        with self._changed:
            if healthy and not self._closed:
                self._idle.append(environment)
            elif isinstance(environment, _ProcessEnvironment) and environment in self._processes:
                self._processes.remove(environment)
            self._changed.notify_all()
        if not healthy:
            environment.close()

"""Serve a run's stream: tail its event log as SSE until the run ends.

The official server's SSE (``langgraph_api.sse``): ``event:``, single-line JSON ``data:``,
``id:``, CRLF line ends; a ``metadata`` event ``{"run_id", "attempt"}`` first, comment
heartbeats, ``error`` ``{"error", "message"}`` when the run failed, and the stream closes when
the run ends. A stream is also closed after ``stream_max_s`` (API Gateway ends a streamed
response after 15 minutes): the SDK then sees the run still active and reconnects to
``Location`` with ``Last-Event-ID``, and goes on where it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from functions.runs import RunService
from functions.store import RunRecord
from functions.streaming.log import START, Cursor, StreamLog
from functions.streaming.modes import event_mode
from functions.streaming.worker import stream_options

HEARTBEAT = b": heartbeat\r\n\r\n"
# Yielded each pass the tail waits: nothing to send, but the server checks the client is
# still there (functions.streaming.http.write_chunked), so a client gone away is seen
# within a poll interval (on_disconnect), not at the next heartbeat.
TICK = b""
# The id of what comes after every event of the run (``error``, a final ``values``).
END = Cursor(99_999_999, 0)
# How often the run record is read while the log is quiet (the end of a run shows there).
RUN_CHECK_S = 0.25
# Polls slow down to this after a quiet second: a long node costs a few reads a second.
IDLE_POLL_S = 0.25


def sse(event: str, data: str, event_id: Cursor | None) -> bytes:
    text = f"event: {event}\r\ndata: {data}\r\n"
    if event_id is not None:
        text += f"id: {event_id}\r\n"
    return (text + "\r\n").encode("utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class StreamTail:
    """One client's view of one run's stream."""

    def __init__(
        self,
        runs: RunService,
        log: StreamLog,
        run: RunRecord,
        *,
        modes: list[str] | None,
        last_event_id: str | None,
        max_s: float,
        poll_s: float,
        heartbeat_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._runs = runs
        self._log = log
        self._run = run
        # None: every mode the run publishes.
        self._modes = modes
        self._cursor = Cursor.parse(last_event_id) if last_event_id else None
        self._max_s = max_s
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._sleep = sleep

    def _wanted(self, name: str) -> bool:
        return self._modes is None or event_mode(name) in self._modes

    def __iter__(self) -> Iterator[bytes]:
        run = self._run
        started = self._clock()
        if self._cursor is None:
            self._cursor = START
            yield sse("metadata", _dumps({"run_id": run.run_id, "attempt": 1}), START)
        cursor = self._cursor
        recorded = stream_options(run.kwargs) is not None
        after_key: str | None = None
        last_write = last_event = self._clock()
        last_check = last_write - RUN_CHECK_S  # the first pass reads the run
        while True:
            now = self._clock()
            ended = False
            if now - last_check >= RUN_CHECK_S or not recorded:
                last_check = now
                current = self._runs.store.get_run(run.thread_id, run.run_id)
                ended = current is None or not current.active
                run = current or run
            got = False
            if recorded:
                from_step = 0 if after_key is not None else cursor.step
                for batch in self._log.read(run.run_id, after_key=after_key, from_step=from_step):
                    after_key = batch.sort_key
                    for event in batch.events:
                        if event.cursor <= cursor:
                            continue
                        cursor = event.cursor
                        got = True
                        if self._wanted(event.name):
                            yield sse(event.name, event.data, event.cursor)
                            last_write = self._clock()
            if ended:
                yield from self._ending(run, cursor, recorded)
                return
            now = self._clock()
            if got:
                last_event = now
            if now - started >= self._max_s:
                # Cut for the gateway's limit: the SDK reconnects with Last-Event-ID.
                return
            if now - last_write >= self._heartbeat_s:
                yield HEARTBEAT
                last_write = now
            quiet = now - last_event > 1.0
            yield TICK
            self._sleep(IDLE_POLL_S if quiet or not recorded else self._poll_s)

    def _ending(self, run: RunRecord, cursor: Cursor, recorded: bool) -> Iterator[bytes]:
        if cursor >= END:
            return
        if run.status == "error":
            values = run.values if isinstance(run.values, dict) else {}
            error = values.get("__error__") or {"error": "Error", "message": run.error or ""}
            yield sse("error", _dumps(error), END)
        elif not recorded and self._wanted("values") and run.values is not None:
            # A background run that published nothing: its final values, as ``join`` gives.
            yield sse("values", _dumps(run.values), END)

"""Publish one superstep's stream events into the run's event log.

The step worker feeds every chunk ``graph.stream`` yields; the publisher shapes it as the
official server names and shapes SSE events (``langgraph_api.stream.astream_state``) and
writes batches from a thread of its own, so the graph never waits on DynamoDB:

- events that show progress while a node runs (model tokens, ``custom``) are written at the
  latest ``flush_s`` (50 ms) after the first of them was buffered, or at once when the
  buffer holds ``flush_bytes`` (4 KB);
- step events (``values``, ``updates``, ``checkpoints``, ``tasks``, ``debug``) go with the
  next such write, or with the step's last write: once per superstep.

One superstep per invocation makes LangGraph emit two things per invocation that a single
``graph.stream`` over the whole run does not: the state the invocation resumes from (its
``values`` and ``checkpoints``) and the ``__interrupt__: ()`` update of ``interrupt_after="*"``.
Both are dropped, so the stream is the one ``graph.stream`` gives in one process.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from typing import Any

from functions.jsonable import to_jsonable
from functions.streaming.log import StreamLog

# A token waits for its batch at most this long: the largest part of its latency to a
# client (docs/streaming.md, Measured); 50 ms keeps p95 under 150 ms locally.
FLUSH_S = 0.05
FLUSH_BYTES = 4096
_LIVE = ("messages", "custom")


class StepPublisher:
    def __init__(
        self,
        log: StreamLog,
        *,
        run_id: str,
        step: int,
        attempt: int,
        modes: list[str],
        subgraphs: bool,
        resumed: bool,
        published: list[tuple[str, str]] | None = None,
        flush_s: float = FLUSH_S,
        flush_bytes: int = FLUSH_BYTES,
    ) -> None:
        self._log = log
        self._run_id = run_id
        self._step = step
        self._attempt = attempt
        self.modes = modes
        self.subgraphs = subgraphs
        # Until the invocation's first task starts, root events re-show the resumed state.
        self._skipping = resumed
        self._flush_s = flush_s
        self._flush_bytes = flush_bytes
        self._messages: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._buffer: list[tuple[str, str]] = []
        self._buffered_bytes = 0
        self._live_since: float | None = None
        # A retried step: what earlier attempts published of it (see ``_Overlap``).
        self._overlap = _Overlap(published) if published else None
        self._next_index = len(published or [])
        self._closing = False
        self._error: BaseException | None = None
        self.writes = 0
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="stream-publisher", daemon=True
        )
        self._thread.start()

    # --- shaping (the graph's thread) ------------------------------------------------------

    def feed(self, ns: tuple[str, ...], mode: str, chunk: Any) -> None:
        if self._skip(ns, mode, chunk):
            return
        suffix = f"|{'|'.join(ns)}" if self.subgraphs and ns else ""
        for name, data in self._shape(mode, chunk, suffix):
            text = json.dumps(to_jsonable(data, stream=True), separators=(",", ":"))
            self._add(name, text, mode in _LIVE)

    def _skip(self, ns: tuple[str, ...], mode: str, chunk: Any) -> bool:
        if mode == "updates" and isinstance(chunk, dict) and "__interrupt__" in chunk:
            # interrupt_after="*" ends every invocation with an empty interrupt.
            return not chunk["__interrupt__"]
        if not self._skipping or ns:
            return False
        head = mode in ("values", "checkpoints") or (
            mode == "debug" and isinstance(chunk, dict) and chunk.get("type") == "checkpoint"
        )
        if not head:
            self._skipping = False
        return head

    def _shape(self, mode: str, chunk: Any, suffix: str) -> list[tuple[str, Any]]:
        if mode == "messages":
            return self._shape_message(chunk, suffix)
        if mode not in self.modes:
            # An interrupt shows in ``values`` by itself: LangGraph (> 1.0.3) ends the step's
            # values with ``__interrupt__``, and the official server then adds nothing.
            return []
        if mode == "debug" and isinstance(chunk, dict) and chunk.get("type") == "checkpoint":
            chunk = {**chunk, "payload": _debug_checkpoint(chunk.get("payload"))}
        return [(f"{mode}{suffix}", chunk)]

    def _shape_message(self, chunk: Any, suffix: str) -> list[tuple[str, Any]]:
        message, metadata = chunk
        shaped: list[tuple[str, Any]] = []
        if "messages-tuple" in self.modes:
            shaped.append((f"messages{suffix}", [message, metadata]))
        if "messages" in self.modes:
            from langchain_core.messages import BaseMessageChunk

            key = str(getattr(message, "id", None))
            if key in self._messages:
                self._messages[key] = self._messages[key] + message
            else:
                self._messages[key] = message
                shaped.append(("messages/metadata", {key: {"metadata": metadata}}))
            kind = "partial" if isinstance(message, BaseMessageChunk) else "complete"
            shaped.append((f"messages/{kind}", [self._messages[key]]))
        return shaped

    def _add(self, name: str, data: str, live: bool) -> None:
        if self._overlap is not None:
            ready = self._overlap.add((name, data))
            if ready is None:
                return
            self._overlap = None
            for event in ready:
                self._append(*event, live)
            return
        self._append(name, data, live)

    def _append(self, name: str, data: str, live: bool) -> None:
        with self._wake:
            self._buffer.append((name, data))
            self._buffered_bytes += len(name) + len(data)
            if live and self._live_since is None:
                self._live_since = time.monotonic()
            if live or self._buffered_bytes >= self._flush_bytes:
                self._wake.notify()

    # --- writing (the publisher's thread) --------------------------------------------------

    def _due(self) -> bool:
        if self._closing or self._buffered_bytes >= self._flush_bytes:
            return True
        return self._live_since is not None and (
            time.monotonic() - self._live_since >= self._flush_s
        )

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due():
                    timeout = None
                    if self._live_since is not None:
                        timeout = max(0.0, self._live_since + self._flush_s - time.monotonic())
                    self._wake.wait(timeout)
                # At most ``flush_bytes`` per item (one event at least): the rest goes next.
                size, cut = 0, 0
                for name, data in self._buffer:
                    if cut and size + len(name) + len(data) > self._flush_bytes:
                        break
                    size += len(name) + len(data)
                    cut += 1
                batch, self._buffer = self._buffer[:cut], self._buffer[cut:]
                self._buffered_bytes -= size
                if not self._buffer:
                    self._live_since = None
                first = self._next_index
                self._next_index += len(batch)
                closing = self._closing
            if batch:
                try:
                    self._log.put(self._run_id, self._step, self._attempt, first, batch)
                    self.writes += 1
                except BaseException as exc:  # re-raised in close(): the step is retried
                    self._error = exc
                    return
            if closing and not self._buffer:
                return

    def close(self, *, drop_task_errors: bool = False) -> None:
        """Write what is left and wait for it; raises if a write failed.

        ``drop_task_errors``: the step is deferred and runs again; the failed task's result
        (``tasks``/``debug`` events with an error) is left out, as a crash would have left
        it out, so the retry's events continue the stream."""
        if drop_task_errors:
            with self._wake:
                kept = [e for e in self._buffer if not _task_error(*e)]
                self._buffered_bytes = sum(len(n) + len(d) for n, d in kept)
                self._buffer = kept
        if self._overlap is not None:
            for event in self._overlap.settle():
                self._append(*event, False)
            self._overlap = None
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error


def _task_error(name: str, data: str) -> bool:
    """A ``tasks`` or ``debug`` event reporting a task that raised."""
    if not name.startswith(("tasks", "debug")) or '"error"' not in data:
        return False
    event = json.loads(data)
    if name.startswith("debug"):
        event = event.get("payload") if event.get("type") == "task_result" else None
    return isinstance(event, dict) and event.get("error") is not None


class _Overlap:
    """Where a retried step's events join those its crashed attempt already published.

    The crashed attempt published a prefix ``P`` of the step's events. The retry either runs
    the step again (its events ``Q`` start where ``P`` starts) or resumes from the task
    writes the crashed attempt saved (LangGraph then re-emits those tasks' ``updates`` but
    not their tokens): either way ``Q`` begins with the last ``k`` events of ``P``. The retry
    publishes only what follows them, numbered after ``P``. ``k`` is the longest overlap,
    events compared without their ids (a rerun gives its messages new ids). Until it is
    known, the retry's events wait here; they were shown already, from the crashed attempt.
    """

    def __init__(self, published: list[tuple[str, str]]) -> None:
        self._published = [_comparable(e) for e in published]
        self._seen: list[tuple[str, str]] = []
        # Overlap lengths still possible (0 always is).
        self._candidates = set(range(1, len(published) + 1))

    def add(self, event: tuple[str, str]) -> list[tuple[str, str]] | None:
        """None while undecided; then the events to publish (those after the overlap)."""
        j = len(self._seen)
        self._seen.append(event)
        key = _comparable(event)
        size = len(self._published)
        self._candidates = {
            k for k in self._candidates if k <= j or self._published[size - k + j] == key
        }
        if any(k > j + 1 for k in self._candidates):
            return None
        return self.settle()

    def settle(self) -> list[tuple[str, str]]:
        done = [k for k in self._candidates if k <= len(self._seen)]
        k = max(done, default=0)
        return self._seen[k:]


_VOLATILE = frozenset(
    {
        "id",
        "run_id",
        "checkpoint_id",
        "parent_checkpoint_id",
        "ts",
        "timestamp",
        "config",
        "parent_config",
        "checkpoint",
        "parent_checkpoint",
        "checkpoint_map",
        "tool_call_id",
        "checkpoint_ns",
        "langgraph_checkpoint_ns",
        "task_id",
        "path",
        "__metadata__",
    }
)


def _comparable(event: tuple[str, str]) -> tuple[str, Any]:
    name, data = event
    return name, _strip(json.loads(data))


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _debug_checkpoint(payload: Any) -> Any:
    """A debug checkpoint as the official server shows it (``checkpoint``, ``parent_checkpoint``)."""
    if not isinstance(payload, dict):
        return payload
    tasks = []
    for task in payload.get("tasks") or []:
        state = task.get("state") if isinstance(task, dict) else None
        if isinstance(state, dict) and state.get("configurable"):
            task = {k: v for k, v in task.items() if k != "state"}
            task["checkpoint"] = state["configurable"]
        tasks.append(task)
    return {
        **payload,
        "checkpoint": _config_checkpoint(payload.get("config")),
        "parent_checkpoint": _config_checkpoint(payload.get("parent_config")),
        "tasks": tasks,
    }


def _config_checkpoint(config: Any) -> dict[str, Any] | None:
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("thread_id") or not configurable.get("checkpoint_id"):
        return None
    checkpoint = {
        "checkpoint_id": configurable["checkpoint_id"],
        "thread_id": configurable["thread_id"],
    }
    if "checkpoint_ns" in configurable:
        checkpoint["checkpoint_ns"] = configurable["checkpoint_ns"] or ""
    if "checkpoint_map" in configurable:
        checkpoint["checkpoint_map"] = configurable["checkpoint_map"]
    return checkpoint

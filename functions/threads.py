"""Threads: records in the runtime table plus their state in the checkpointer.

State, history and ``update_state`` go through the compiled graph (``get_state``,
``get_state_history``, ``update_state(as_node=...)``) and are shaped like the SDK's
``ThreadState``.
"""

from __future__ import annotations

import uuid
from typing import Any

from functions.api_models import (
    CheckpointRef,
    HistoryQuery,
    StateUpdate,
    ThreadCreate,
    ThreadSearch,
)
from functions.errors import ConflictError, InvalidRequestError, NotFoundError
from functions.executor import thread_config
from functions.graph_loader import graph_exists, load_graph
from functions.jsonable import interrupt_to_api, to_jsonable
from functions.settings import Settings
from functions.store import STATE_UPDATE_HOLDER, Store, ThreadRecord, now_iso


def _checkpoint_api(config: dict[str, Any] | None) -> dict[str, Any] | None:
    conf = (config or {}).get("configurable", {})
    # A thread with no checkpoint yet has none (null), as the official server answers.
    if not conf.get("checkpoint_id"):
        return None
    return {
        "thread_id": conf.get("thread_id"),
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "checkpoint_id": conf.get("checkpoint_id"),
        "checkpoint_map": conf.get("checkpoint_map"),
    }


def _interrupts_api(interrupts: Any) -> list[dict[str, Any]]:
    return [interrupt_to_api(i) for i in interrupts or ()]


def snapshot_to_api(snapshot: Any) -> dict[str, Any]:
    """A langgraph ``StateSnapshot`` as the SDK's ``ThreadState``."""
    tasks = [
        {
            "id": task.id,
            "name": task.name,
            "path": to_jsonable(list(task.path)),
            "error": None if task.error is None else str(task.error),
            "interrupts": _interrupts_api(task.interrupts),
            "checkpoint": None,
            "state": None,
            "result": to_jsonable(task.result),
        }
        for task in snapshot.tasks
    ]
    checkpoint = _checkpoint_api(snapshot.config)
    parent = _checkpoint_api(snapshot.parent_config)
    return {
        "values": to_jsonable(snapshot.values),
        "next": list(snapshot.next),
        "checkpoint": checkpoint,
        "metadata": to_jsonable(snapshot.metadata),
        "created_at": snapshot.created_at,
        "parent_checkpoint": parent,
        "tasks": tasks,
        "interrupts": _interrupts_api(snapshot.interrupts),
        # Deprecated in the SDK's ThreadState but still sent by the official server.
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        "parent_checkpoint_id": parent["checkpoint_id"] if parent else None,
    }


def _with_graph_metadata(config: dict[str, Any], thread: ThreadRecord) -> dict[str, Any]:
    # As the official server: a checkpoint written by update_state names its graph too.
    graph_id = thread.metadata.get("graph_id")
    if graph_id:
        config["metadata"] = {"graph_id": graph_id}
    return config


def _matches(subset: dict[str, Any] | None, data: Any) -> bool:
    if not subset:
        return True
    if not isinstance(data, dict):
        return False
    return all(data.get(k) == v for k, v in subset.items())


class ThreadService:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def get(self, tenant: str, thread_id: str) -> ThreadRecord:
        thread = self.store.get_thread(thread_id)
        # Another tenant's thread is indistinguishable from a missing one.
        if thread is None or thread.tenant != tenant:
            raise NotFoundError(f"Thread {thread_id!r} not found.")
        return thread

    def create(self, tenant: str, body: ThreadCreate) -> ThreadRecord:
        now = now_iso()
        thread = ThreadRecord(
            thread_id=body.thread_id or str(uuid.uuid4()),
            tenant=tenant,
            created_at=now,
            updated_at=now,
            metadata=body.metadata or {},
        )
        if self.store.put_thread(thread, if_absent=True):
            return thread
        existing = self.store.get_thread(thread.thread_id)
        if existing is None or existing.tenant != tenant:
            # Thread ids are global; do not reveal that another tenant holds this one.
            raise ConflictError(f"Thread id {thread.thread_id!r} is not available.")
        if body.if_exists == "do_nothing":
            return existing
        raise ConflictError(
            f"Thread {thread.thread_id!r} already exists; pass if_exists='do_nothing' to reuse it."
        )

    def patch(self, tenant: str, thread_id: str, metadata: dict[str, Any]) -> ThreadRecord:
        thread = self.get(tenant, thread_id)
        return self.store.update_thread_metadata(thread_id, {**thread.metadata, **metadata})

    def delete(self, tenant: str, thread_id: str) -> None:
        thread = self.get(tenant, thread_id)
        from functions.approvals.service import stop_thread_approvals

        stop_thread_approvals(self.settings, thread_id)
        graph = self._graph(thread)
        if graph is not None and graph.checkpointer is not None:
            graph.checkpointer.delete_thread(thread_id)
        from functions.run_payloads import RunPayloads

        RunPayloads(self.settings.payload_bucket).delete_thread(thread_id)
        self.store.delete_thread(thread_id)

    def search(self, tenant: str, body: ThreadSearch) -> list[dict[str, Any]]:
        threads = [
            t
            for t in self.store.search_threads(tenant)
            if _matches(body.metadata, t.metadata)
            and _matches(body.values, t.values)
            and (body.status is None or t.status == body.status)
            and (body.ids is None or t.thread_id in body.ids)
        ]
        sort_by = body.sort_by or "created_at"
        threads.sort(
            key=lambda t: str(getattr(t, sort_by)), reverse=(body.sort_order or "desc") == "desc"
        )
        return [t.to_api() for t in threads[body.offset : body.offset + body.limit]]

    # --- state ---------------------------------------------------------------------------

    def _graph(self, thread: ThreadRecord) -> Any:
        graph_id = thread.metadata.get("graph_id")
        if not graph_id or not graph_exists(str(graph_id)):
            from graphs.registry import graph_ids

            # A thread that never ran has an empty state under any graph; use the first one.
            graph_id = graph_ids()[0]
        return load_graph(str(graph_id), self.settings)

    def state(
        self, tenant: str, thread_id: str, checkpoint_id: str | None = None
    ) -> dict[str, Any]:
        thread = self.get(tenant, thread_id)
        graph = self._graph(thread)
        if checkpoint_id:
            require_checkpoint(graph, thread_id, checkpoint_id)
        snapshot = graph.get_state(thread_config(thread_id, checkpoint_id))
        return snapshot_to_api(snapshot)

    def history(self, tenant: str, thread_id: str, query: HistoryQuery) -> list[dict[str, Any]]:
        thread = self.get(tenant, thread_id)
        start = query.checkpoint.checkpoint_id if query.checkpoint else None
        before: dict[str, Any] | None = None
        if query.before is not None:
            before_id = (
                query.before if isinstance(query.before, str) else query.before.checkpoint_id
            )
            before = thread_config(thread_id, before_id)
        snapshots = self._graph(thread).get_state_history(
            thread_config(thread_id, start), filter=query.metadata, before=before, limit=query.limit
        )
        return [snapshot_to_api(s) for s in snapshots]

    def update_state(self, tenant: str, thread_id: str, body: StateUpdate) -> dict[str, Any]:
        thread = self.get(tenant, thread_id)
        # The update holds the thread while it writes, so no run can start from the head it
        # is replacing (that would fork the thread); a process that dies holding it is
        # freed once ``state_hold_s`` has passed (the API's timeout is far shorter).
        holder = f"{STATE_UPDATE_HOLDER}{uuid.uuid4().hex}"
        if not self.store.acquire_for_update(thread_id, holder, self.settings.state_hold_s):
            active = self.store.get_thread(thread_id)
            raise ConflictError(
                f"Thread {thread_id!r} has an active run "
                f"({active.active_run_id if active else thread.active_run_id}); "
                "update its state when the run has ended."
            )
        try:
            result, snapshot = self._write_state(thread, body)
        except BaseException:
            self.store.release_thread(
                thread_id, holder, status=thread.status, interrupts=thread.interrupts
            )
            raise
        interrupts = {t.id: _interrupts_api(t.interrupts) for t in snapshot.tasks if t.interrupts}
        status = "interrupted" if snapshot.interrupts else thread.status
        released = self.store.release_update_hold(
            thread_id,
            holder,
            status=status if status != "busy" else "idle",
            values=to_jsonable(snapshot.values),
            interrupts=interrupts,
        )
        if released is not None and released.queued_runs > 0:
            # A run queued behind the update (its creator saw the thread held).
            from functions.queues import StepQueues
            from functions.runs import RunService

            RunService(self.settings, self.store, StepQueues(self.settings)).start_next(
                thread_id, released.queued_runs
            )
        return result

    def _write_state(self, thread: ThreadRecord, body: StateUpdate) -> tuple[dict[str, Any], Any]:
        thread_id = thread.thread_id
        checkpoint_id = body.checkpoint_id or (
            body.checkpoint.checkpoint_id if body.checkpoint else None
        )
        from langgraph.errors import InvalidUpdateError

        graph = self._graph(thread)
        if checkpoint_id:
            # langgraph would fork from an empty state and make it the thread's head.
            require_checkpoint(graph, thread_id, checkpoint_id)
        try:
            config = graph.update_state(
                _with_graph_metadata(thread_config(thread_id, checkpoint_id), thread),
                body.values,
                as_node=body.as_node,
            )
        except (InvalidUpdateError, ValueError, KeyError) as exc:
            # Unknown node, ambiguous update, values that do not fit the state schema.
            raise InvalidRequestError(f"Cannot update state: {exc}") from exc
        snapshot = graph.get_state(thread_config(thread_id))
        checkpoint = _checkpoint_api(config)
        # The official server answers with the checkpoint three ways; clients read any of them.
        result = {
            "checkpoint": checkpoint,
            "configurable": checkpoint,
            "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        }
        return result, snapshot


def require_checkpoint(graph: Any, thread_id: str, checkpoint_id: str) -> None:
    """NotFoundError unless the thread has this checkpoint (one read of the checkpointer)."""
    if graph.checkpointer.get_tuple(thread_config(thread_id, checkpoint_id)) is None:
        raise NotFoundError(f"Checkpoint {checkpoint_id!r} not found on thread {thread_id!r}.")


def checkpoint_ref(ref: CheckpointRef | None) -> str | None:
    return None if ref is None else ref.checkpoint_id

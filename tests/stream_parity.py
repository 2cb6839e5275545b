"""What a run's stream must look like: LangGraph's own ``graph.stream`` in one process,
named and shaped as the official server sends it (``langgraph_api.stream.astream_state``).

Ids, timestamps and run metadata differ by nature between two runs; ``shape`` keeps the
structure (keys, types, list lengths) and the values a client reads (message text, custom
payloads, node names), and drops the rest.
"""

from __future__ import annotations

import json
import re
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from functions.jsonable import to_jsonable
from graphs.registry import get_factory

# Keys whose values are ids, times or per-run metadata: compared by type only.
VOLATILE = {
    "id",
    "run_id",
    "thread_id",
    "checkpoint_id",
    "checkpoint_ns",
    "parent_checkpoint_id",
    "checkpoint_map",
    "ts",
    "timestamp",
    "created_at",
    "config",
    "parent_config",
    "checkpoint",
    "parent_checkpoint",
    "metadata",
    "langgraph_checkpoint_ns",
    "path",
    "task_id",
    "tool_call_id",
}
_TASK_NS = re.compile(r"^([^|:]+):[0-9a-f-]+$")


def reference_stream(
    graph_id: str,
    graph_input: Any,
    modes: list[str],
    *,
    subgraphs: bool = False,
    resume: Any = None,
) -> list[tuple[str, Any]]:
    """The official server's events for a run of ``graph_id`` (after ``metadata``)."""
    from langgraph.types import Command

    graph = get_factory(graph_id)(InMemorySaver(), None)
    # The run's metadata goes into the config, as both servers put it (tasks events show it).
    config = {
        "configurable": {"thread_id": "reference"},
        "metadata": {"graph_id": graph_id, "assistant_id": graph_id, "run_id": "reference"},
    }
    wanted = {"messages" if m == "messages-tuple" else m for m in modes}
    events = _events(
        graph.stream(graph_input, config, stream_mode=sorted(wanted), subgraphs=subgraphs),
        modes,
        subgraphs,
    )
    if resume is not None:
        events += _events(
            graph.stream(
                Command(resume=resume), config, stream_mode=sorted(wanted), subgraphs=subgraphs
            ),
            modes,
            subgraphs,
        )
    return events


def _events(stream: Any, modes: list[str], subgraphs: bool) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    for item in stream:
        ns, mode, chunk = item if subgraphs else ((), *item)
        suffix = f"|{'|'.join(ns)}" if subgraphs and ns else ""
        data = json.loads(json.dumps(to_jsonable(chunk, stream=True)))
        if mode == "messages":
            if "messages-tuple" in modes:
                events.append((f"messages{suffix}", data))
        elif mode in modes:
            if mode == "debug" and data.get("type") == "checkpoint":
                data["payload"] = _official_debug_checkpoint(data["payload"])
            events.append((f"{mode}{suffix}", data))
    return events


def _official_debug_checkpoint(payload: dict[str, Any]) -> dict[str, Any]:
    """``langgraph_api.stream._preprocess_debug_checkpoint`` (0.16.7), restated."""

    def checkpoint(config: Any) -> Any:
        configurable = (config or {}).get("configurable") or {}
        if not configurable.get("thread_id") or not configurable.get("checkpoint_id"):
            return None
        keys = ("checkpoint_id", "thread_id", "checkpoint_ns", "checkpoint_map")
        return {k: configurable[k] for k in keys if k in configurable}

    tasks = []
    for task in payload["tasks"]:
        if task.get("state") and task["state"].get("configurable"):
            task = {**task, "checkpoint": task["state"]["configurable"]}
            del task["state"]
        tasks.append(task)
    return {
        **payload,
        "checkpoint": checkpoint(payload["config"]),
        "parent_checkpoint": checkpoint(payload.get("parent_config")),
        "tasks": tasks,
    }


def name_shape(name: str) -> str:
    """An event name with subgraph task ids dropped (``updates|research:<id>``)."""
    base, *ns = name.split("|")
    return "|".join([base, *(_TASK_NS.sub(r"\1", part) for part in ns)])


def shape(value: Any, key: str | None = None) -> Any:
    if key in VOLATILE:
        return type(value).__name__
    if isinstance(value, dict):
        return {k: shape(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, str) and (value.startswith("lc_run--") or value.startswith("run-")):
        return "message-id"
    return value


def comparable(events: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Events as compared: names without task ids, data as ``shape`` keeps it.

    ``messages`` metadata is cut to LangGraph's own ``langgraph_*`` keys: the official
    server adds its run's metadata (different keys from ours, and from an in-process run).
    """
    out = []
    for name, data in events:
        if name.split("|")[0] == "messages" and isinstance(data, list) and len(data) == 2:
            meta = {
                k: v
                for k, v in data[1].items()
                if k in ("langgraph_node", "langgraph_step", "langgraph_triggers")
            }
            data = [data[0], meta]
        out.append((name_shape(name), shape(data)))
    return out


def parse_sse(raw: bytes) -> list[tuple[str, Any, str | None]]:
    """``(event, data, id)`` of each event in an SSE body (comments skipped)."""
    events = []
    for block in raw.split(b"\r\n\r\n"):
        name, data, event_id = "", None, None
        for line in block.split(b"\r\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = json.loads(line[6:])
            elif line.startswith(b"id: "):
                event_id = line[4:].decode()
        if name:
            events.append((name, data, event_id))
    return events

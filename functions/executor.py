"""Execute exactly one superstep of a graph and say what happened.

``interrupt_after="*"`` on the ``stream`` call stops after one superstep with the checkpoint
saved; ``stream_mode=["checkpoints", "tasks"]`` tells the outcome without another read
(see ARCHITECTURE.md, "One superstep per invocation").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["continue", "done", "interrupted"]


@dataclass
class StepResult:
    outcome: Outcome
    # The latest checkpoint after the step (None if the graph wrote none).
    checkpoint_id: str | None
    # The checkpoint the thread was at before this step's input was applied.
    start_checkpoint_id: str | None
    values: Any = None
    # Interrupts raised in this step, as ``{"value", "id"}`` dicts keyed by task id.
    interrupts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    next_nodes: list[str] = field(default_factory=list)


def thread_config(thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _checkpoint_id(config: dict[str, Any] | None) -> str | None:
    if not config:
        return None
    value = config.get("configurable", {}).get("checkpoint_id")
    return str(value) if value else None


def run_superstep(
    graph: Any, graph_input: Any, config: dict[str, Any], publisher: Any = None
) -> StepResult:
    """Run one superstep; node exceptions propagate to the caller unchanged.

    ``publisher`` (a ``functions.streaming.publisher.StepPublisher``, for a run that asked
    for a stream) gets every chunk of the modes it wants as well.
    """
    from functions.jsonable import to_jsonable

    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    interrupts: dict[str, list[dict[str, Any]]] = {}
    modes = ["checkpoints", "tasks"]
    subgraphs = False
    if publisher is not None:
        from functions.streaming.modes import graph_modes

        modes = sorted({*modes, *graph_modes(publisher.modes)})
        subgraphs = publisher.subgraphs
    for item in graph.stream(
        graph_input, config, interrupt_after="*", stream_mode=modes, subgraphs=subgraphs
    ):
        ns, mode, chunk = item if subgraphs else ((), *item)
        if publisher is not None:
            publisher.feed(tuple(ns), mode, chunk)
        if ns:
            continue
        if mode == "checkpoints":
            first = first or chunk
            last = chunk
        elif mode == "tasks" and chunk.get("interrupts"):
            raised = [to_jsonable(i) for i in chunk["interrupts"]]
            interrupts.setdefault(str(chunk["id"]), []).extend(raised)

    start = None
    if first is not None:
        # An input checkpoint sits on top of the thread's previous head; a resume starts at it.
        is_input = first.get("metadata", {}).get("source") == "input"
        start = (
            _checkpoint_id(first.get("parent_config"))
            if is_input
            else _checkpoint_id(first["config"])
        )
    if last is None:
        return StepResult("done", None, start)

    values = to_jsonable(last.get("values"))
    checkpoint_id = _checkpoint_id(last["config"])
    next_nodes = list(last.get("next") or [])
    if interrupts:
        return StepResult("interrupted", checkpoint_id, start, values, interrupts, next_nodes)
    if not next_nodes:
        return StepResult("done", checkpoint_id, start, values, {}, next_nodes)
    return StepResult("continue", checkpoint_id, start, values, {}, next_nodes)

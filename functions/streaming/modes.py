"""Stream modes: which a client may ask for, and what the worker streams from LangGraph."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# The official server's modes we serve, with the LangGraph mode each needs.
SUPPORTED: dict[str, str] = {
    "values": "values",
    "updates": "updates",
    "checkpoints": "checkpoints",
    "tasks": "tasks",
    "debug": "debug",
    "custom": "custom",
    "messages-tuple": "messages",
    "messages": "messages",
}
# Modes of the official server that are not served here, and why (docs/streaming.md).
UNSUPPORTED: dict[str, str] = {
    "events": "LangChain callback events are not published by the step worker",
    "tools": "tool lifecycle events belong to the v2 event protocol, not served here",
    "lifecycle": "lifecycle events belong to the v2 event protocol, not served here",
}
DEFAULT_MODES: tuple[str, ...] = ("values",)


def normalise(value: Any) -> list[str] | None:
    """``stream_mode`` as the SDK sends it (a string or a list) as a list of unique modes.

    Raises ValueError (a 422) naming the unsupported mode and the supported ones.
    """
    if value is None:
        return None
    items: Iterable[Any] = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("stream_mode must be a string or a list of strings")
    modes: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("stream_mode must be a string or a list of strings")
        if item not in SUPPORTED:
            why = UNSUPPORTED.get(item, "it is not a stream mode")
            raise ValueError(
                f"stream_mode {item!r} is not supported ({why}); supported: {', '.join(SUPPORTED)}"
            )
        if item not in modes:
            modes.append(item)
    return modes


def graph_modes(modes: Iterable[str]) -> list[str]:
    """The LangGraph stream modes to ask ``graph.stream`` for, besides the executor's own.

    Only those asked for: as the official server (langgraph-api 0.16.7 with LangGraph
    > 1.0.3), an interrupt is shown by ``values`` itself (its last chunk carries
    ``__interrupt__``), not from ``updates`` streamed on the side.
    """
    return sorted({SUPPORTED[m] for m in modes})


def event_mode(event: str) -> str:
    """The client mode an SSE event name belongs to (``updates|sub:1`` -> ``updates``)."""
    base = event.split("|", 1)[0]
    if base.startswith("messages/"):
        return "messages"
    if base == "messages":
        return "messages-tuple"
    return base


def records_background_stream(modes: list[str] | None, resumable: bool) -> bool:
    """Whether a background run (``POST /threads/{tid}/runs``) publishes its stream.

    The SDK sends ``stream_mode=["values"]`` on every ``runs.create`` whether the caller
    wants a stream or not, so that default alone does not count as asking: a run publishes
    when it names other modes or sets ``stream_resumable``. Joining a run that published
    nothing still gives its final ``values`` when it ends (docs/streaming.md).
    """
    if resumable:
        return True
    return modes is not None and modes != list(DEFAULT_MODES)

"""Turn graph values (LangChain messages, interrupts, dataclasses) into plain JSON data.

Messages become their ``model_dump()`` (``type``, ``content``, ``id``, ...), as the official
LangGraph server returns them.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime
from enum import Enum
from typing import Any
from uuid import UUID


def interrupt_to_api(interrupt: Any, *, stream: bool = False) -> dict[str, Any]:
    """A langgraph ``Interrupt`` as the SDK's ``Interrupt`` (``value``, ``id``).

    ``stream``: as the official server's streams serialize it, the dataclass whole
    (``response_schema`` null when the graph gave none)."""
    data: dict[str, Any] = {
        "value": to_jsonable(interrupt.value, stream=stream),
        "id": interrupt.id,
    }
    schema = getattr(interrupt, "response_schema", None)
    if schema is not None or (stream and hasattr(interrupt, "response_schema")):
        data["response_schema"] = to_jsonable(schema, stream=stream)
    return data


def to_jsonable(value: Any, *, stream: bool = False) -> Any:
    """``value`` as JSON data; ``stream``: as in a run's stream events (interrupts whole)."""
    # Recognised by name so that shaping JSON does not import langgraph on the API's cold path.
    if type(value).__name__ == "Interrupt" and type(value).__module__.startswith("langgraph"):
        return interrupt_to_api(value, stream=stream)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, stream=stream) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, stream=stream) for v in value]
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return to_jsonable(model_dump(), stream=stream)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name), stream=stream)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (UUID, Enum)):
        return str(value.value if isinstance(value, Enum) else value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    # Anything else (custom objects in state) is shown, not dropped.
    return repr(value)


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), separators=(",", ":"))


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)

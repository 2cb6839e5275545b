"""An assistant's drawable graph and JSON schemas, shaped as the official server returns them.

Backs ``GET /assistants/{id}/graph``, ``/schemas`` and ``/subgraphs`` (the SDK's
``assistants.get_graph``, ``get_schemas`` and ``get_subgraphs``). Imported on first use:
schema generation pulls in pydantic model building the other routes never need.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from langchain_core.runnables.utils import create_model
from pydantic import TypeAdapter

from functions.errors import InvalidRequestError

logger = Logger(child=True)

# (``create_model`` is langchain's, as the official server uses: it understands ``__root__``.)
# Keys of ``configurable`` the runtime fills in itself; not part of a graph's config schema.
_RUNTIME_CONFIG_KEYS = ("thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map")


def parse_xray(value: str | None) -> bool | int:
    """``xray`` as the official server reads it: true/false or a positive depth."""
    if value is None or value in ("", "false", "False"):
        return False
    if value in ("true", "True"):
        return True
    try:
        depth = int(value)
    except ValueError:
        raise InvalidRequestError("Invalid xray value") from None
    if depth <= 0:
        raise InvalidRequestError("Invalid xray value")
    return depth


def graph_json(graph: Any, xray: bool | int = False) -> dict[str, Any]:
    """Nodes and edges of the drawable graph; node data without the runnable's import path."""
    drawable: dict[str, Any] = graph.get_graph(xray=xray).to_json()
    for node in drawable.get("nodes", []):
        data = node.get("data")
        if isinstance(data, dict):
            data.pop("id", None)
    return drawable


def _state_schema(graph: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in graph.stream_channels_list:
        update_type = graph.channels[key].UpdateType
        try:
            create_model(key, __root__=(update_type, None)).model_json_schema()
            fields[key] = (update_type, None)
        except Exception:
            fields[key] = (Any, None)
    schema: dict[str, Any] = create_model(graph.get_name("State"), **fields).model_json_schema()
    return schema


def _config_schema(graph: Any) -> dict[str, Any]:
    model = graph.config_schema()
    fields = getattr(model, "model_fields", None) or {}
    if "configurable" not in fields:
        return {}
    annotation: Any = fields["configurable"].annotation
    schema: dict[str, Any] = TypeAdapter(annotation).json_schema()
    for key in _RUNTIME_CONFIG_KEYS:
        schema.get("properties", {}).pop(key, None)
    return schema


def graph_schemas(graph: Any) -> dict[str, Any]:
    """input/output/state/config/context JSON schemas; null where one cannot be built."""
    builders = {
        "input_schema": graph.get_input_jsonschema,
        "output_schema": graph.get_output_jsonschema,
        "state_schema": lambda: _state_schema(graph),
        "config_schema": lambda: _config_schema(graph),
        "context_schema": graph.get_context_jsonschema,
    }
    schemas: dict[str, Any] = {}
    for name, build in builders.items():
        try:
            schemas[name] = build()
        except Exception:
            logger.warning("cannot build %s", name, exc_info=True)
            schemas[name] = None
    return schemas


def subgraph_schemas(graph: Any) -> dict[str, Any]:
    """Schemas of each subgraph by namespace (the support graph has none: ``{}``)."""
    return {ns: graph_schemas(sub) for ns, sub in graph.get_subgraphs()}

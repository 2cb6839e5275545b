"""Compiled graphs with the engine's checkpointer, node cache and memory store attached,
cached per process."""

from __future__ import annotations

import uuid
from typing import Any

from functions.checkpointer import make_checkpointer
from functions.errors import NotFoundError
from functions.settings import Settings

_CACHE: dict[tuple[Any, ...], Any] = {}


def graph_exists(graph_id: str) -> bool:
    from graphs.registry import GRAPHS

    return graph_id in GRAPHS


# LangGraph Platform names the default assistant of graph G ``uuid5(NAMESPACE_GRAPH, G)``,
# the same id in every deployment (Studio shows it); we accept it as an alias of G.
NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


def resolve_assistant_id(assistant_id: str) -> str:
    """The graph id for ``assistant_id``: itself, or the graph whose platform id it is."""
    from graphs.registry import GRAPHS

    if assistant_id in GRAPHS:
        return assistant_id
    for graph_id in GRAPHS:
        if str(uuid.uuid5(NAMESPACE_GRAPH, graph_id)) == assistant_id.lower():
            return graph_id
    return assistant_id


def load_graph(graph_id: str, settings: Settings) -> Any:
    """The compiled graph ``graph_id``; NotFoundError if no such graph is registered."""
    if not graph_exists(graph_id):
        raise NotFoundError(f"Assistant {graph_id!r} not found; see POST /assistants/search.")
    key = (
        graph_id,
        settings.checkpointer,
        settings.checkpoint_table,
        settings.payload_bucket,
        settings.cache_table,
        settings.memory_table,
        settings.chat_model,
        settings.offline_model,
        settings.model_limits,
        settings.models,
        settings.run_models,
    )
    if key not in _CACHE:
        _CACHE[key] = _compile(graph_id, settings)
    return _CACHE[key]


def _compile(graph_id: str, settings: Settings) -> Any:
    from functions.cache import attach_cache  # imports LangGraph: not at cold start
    from functions.memory import attach_memory

    # Provider SDKs are imported by the factory only when a model is made.
    from functions.models.factory import platform_model
    from graphs.registry import get_factory

    graph = get_factory(graph_id)(make_checkpointer(settings), platform_model(settings, graph_id))
    return attach_memory(attach_cache(graph, settings), settings)

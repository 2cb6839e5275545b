"""Compiled graphs with the engine's checkpointer attached, cached per process."""

from __future__ import annotations

from typing import Any

from functions.checkpointer import make_checkpointer
from functions.errors import NotFoundError
from functions.settings import Settings

_CACHE: dict[tuple[Any, ...], Any] = {}


def graph_exists(graph_id: str) -> bool:
    from graphs.registry import GRAPHS

    return graph_id in GRAPHS


def load_graph(graph_id: str, settings: Settings) -> Any:
    """The compiled graph ``graph_id``; NotFoundError if no such graph is registered."""
    if not graph_exists(graph_id):
        raise NotFoundError(f"Assistant {graph_id!r} not found; see POST /assistants/search.")
    key = (
        graph_id,
        settings.checkpointer,
        settings.checkpoint_table,
        settings.payload_bucket,
        settings.chat_model,
        settings.offline_model,
    )
    if key not in _CACHE:
        _CACHE[key] = _compile(graph_id, settings)
    return _CACHE[key]


def _compile(graph_id: str, settings: Settings) -> Any:
    from graphs.registry import get_factory

    model = None
    if settings.chat_model and not settings.offline_model:
        # Imported lazily: model SDKs are heavy and most invocations never need them.
        from langchain.chat_models import init_chat_model

        model = init_chat_model(settings.chat_model)
    return get_factory(graph_id)(make_checkpointer(settings), model)

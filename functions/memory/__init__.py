"""LangGraph's long-term memory store (``BaseStore``) on DynamoDB, shared by every run,
thread and worker.

``from functions.memory import DynamoDBStore`` — see ``dynamodb.py`` for the data model and
docs/memory.md for how a graph uses it (``get_store()``, ``runtime.store``, a ``store`` node
argument). The platform attaches the store to the graphs it compiles
(``functions.graph_loader``), as it attaches the checkpointer. (``functions/store.py`` is
something else: the runtime's own records.)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from functions.memory.dynamodb import DynamoDBStore
from functions.memory.errors import (
    MemoryItemTooLargeError,
    MemoryKeyTooLongError,
    MemoryLabelError,
    MemoryStoreError,
    MemoryTableMissingError,
    MemoryThrottledError,
    VectorSearchUnsupportedError,
)
from functions.settings import Settings

__all__ = [
    "DynamoDBStore",
    "MemoryItemTooLargeError",
    "MemoryKeyTooLongError",
    "MemoryLabelError",
    "MemoryStoreError",
    "MemoryTableMissingError",
    "MemoryThrottledError",
    "VectorSearchUnsupportedError",
    "attach_memory",
    "make_memory",
]


def make_memory(settings: Settings) -> DynamoDBStore | None:
    """The memory store for ``settings`` (None when ``memory_table`` is unset), one per process."""
    if not settings.memory_table:
        return None
    return _cached(settings.memory_table)


@lru_cache(maxsize=8)
def _cached(table: str) -> DynamoDBStore:
    return DynamoDBStore(table)


def attach_memory(graph: Any, settings: Settings) -> Any:
    """``graph`` with the memory store of ``settings`` attached, also to its subgraphs.

    The platform's store replaces one the graph was compiled with, as the official server's
    does: an ``InMemoryStore`` would hold memories only in the Lambda container that wrote
    them. Subgraphs get it too, so one run sees one store whichever graph reads it. Without a
    memory table the graph is returned as it is (``get_store()`` then finds none).
    """
    store = make_memory(settings)
    if store is None:
        return graph
    graph.store = store
    for _name, subgraph in graph.get_subgraphs(recurse=True):
        subgraph.store = store
    return graph

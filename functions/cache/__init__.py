"""LangGraph node caching (``CachePolicy``) on DynamoDB, shared by every worker and run.

``from functions.cache import DynamoDBCache`` — see ``dynamodb.py`` for the data model and
docs/models.md, "Node caching", for how a graph uses it. The platform attaches the cache to
the graphs it compiles (``functions.graph_loader``), as it attaches the checkpointer.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from functions.cache.dynamodb import DynamoDBCache
from functions.cache.errors import CacheError, CacheTableMissingError
from functions.settings import Settings

__all__ = ["CacheError", "CacheTableMissingError", "DynamoDBCache", "attach_cache", "make_cache"]


def make_cache(settings: Settings) -> DynamoDBCache[Any] | None:
    """The node cache for ``settings`` (None when ``cache_table`` is unset), one per process."""
    if not settings.cache_table:
        return None
    return _cached(settings.cache_table)


@lru_cache(maxsize=8)
def _cached(table: str) -> DynamoDBCache[Any]:
    return DynamoDBCache(table)


def attach_cache(graph: Any, settings: Settings) -> Any:
    """``graph`` with the node cache of ``settings`` attached, also to its subgraphs.

    LangGraph reads ``cache`` from each compiled graph (a subgraph does not inherit its
    parent's), so a ``CachePolicy`` on a subgraph's node needs it there too. The platform's
    cache replaces one the graph was compiled with, as the checkpointer does: an in-process
    cache would hit only in the Lambda container that filled it. Without a cache table the
    graph is returned as it is (a ``CachePolicy`` then just runs its node every time).
    """
    cache = make_cache(settings)
    if cache is None:
        return graph
    graph.cache = cache
    for _name, subgraph in graph.get_subgraphs(recurse=True):
        subgraph.cache = cache
    return graph

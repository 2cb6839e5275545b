"""Graph id -> compiled-graph factory. Graph ids double as assistant ids.

A factory takes the checkpointer (the server attaches it, not the graph) and an optional
chat model (None = the deterministic offline model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

GraphFactory = Callable[
    [Checkpointer, BaseChatModel | None], CompiledStateGraph[Any, Any, Any, Any]
]


def _support(checkpointer: Checkpointer, model: BaseChatModel | None) -> Any:
    from graphs.support import build_graph

    return build_graph(checkpointer, model)


def _research(checkpointer: Checkpointer, model: BaseChatModel | None) -> Any:
    from graphs.research import build_graph

    return build_graph(checkpointer, model)


GRAPHS: dict[str, GraphFactory] = {"support": _support, "research": _research}

DESCRIPTIONS: dict[str, str] = {
    "support": "Customer-support supervisor: classify, then billing/technical/general "
    "specialist, or a human approval before cancelling an account or issuing a refund.",
    "research": "Plan, research in a subgraph (custom progress events, model tokens), "
    "an optional human review, answer: shows what run streams carry.",
}


def graph_ids() -> list[str]:
    return list(GRAPHS)


def get_factory(graph_id: str) -> GraphFactory:
    """The factory for ``graph_id``; KeyError if it is not registered."""
    return GRAPHS[graph_id]

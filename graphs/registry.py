"""Graph id -> compiled-graph factory. Graph ids double as assistant ids.

A factory takes the checkpointer (the server attaches it, not the graph) and an optional
chat model (None = the deterministic offline model).

Beside the built-in graphs, those of a LangGraph project's ``langgraph.json``
(``LAMBDAGRAPH_PROJECT``, else one at the checkout's root: ``graphs.project``) are registered
when this module is imported; their modules are imported only when a graph is first built.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from graphs.project import (
    PROJECT_ENV,
    Project,
    ProjectConfigError,
    apply_environment,
    find_project,
    graph_factory,
    load_attribute,
    read_project,
    warn_ignored_keys,
)

GraphFactory = Callable[
    [Checkpointer, BaseChatModel | None], CompiledStateGraph[Any, Any, Any, Any]
]


def _support(checkpointer: Checkpointer, model: BaseChatModel | None) -> Any:
    from graphs.support import build_graph

    return build_graph(checkpointer, model)


def _research(checkpointer: Checkpointer, model: BaseChatModel | None) -> Any:
    from graphs.research import build_graph

    return build_graph(checkpointer, model)


BUILTIN_GRAPHS: dict[str, GraphFactory] = {"support": _support, "research": _research}
GRAPHS: dict[str, GraphFactory] = dict(BUILTIN_GRAPHS)

DESCRIPTIONS: dict[str, str | None] = {
    "support": "Customer-support supervisor: a structured classification (route, "
    "confidence, reason), then the billing/technical/general specialist; a human checks a "
    "low-confidence route and approves cancelling an account or issuing a refund.",
    "research": "A ReAct agent in a subgraph: searches the bundled Quillstream docs and "
    "calculates with tools (errors and timeouts are observations), a reviewer checks the "
    "draft's citations, an optional human review; shows what run streams carry.",
}


def graph_ids() -> list[str]:
    return list(GRAPHS)


def get_factory(graph_id: str) -> GraphFactory:
    """The factory for ``graph_id``; KeyError if it is not registered."""
    return GRAPHS[graph_id]


# --- a LangGraph project's langgraph.json (graphs.project, docs/projects.md) ---------------

_project: Project | None = None


def current_project() -> Project | None:
    """The project whose graphs are registered, if any."""
    return _project


def use_project(project: Project | None) -> None:
    """Register ``project``'s graphs (replacing those of a project registered before).

    ProjectConfigError if a graph id is also a built-in graph's. Sets the project's ``env``
    (variables already set win) and puts its local dependencies on ``sys.path``.
    """
    global _project
    if project is not None:
        for entry in project.graphs:
            if entry.graph_id in BUILTIN_GRAPHS:
                raise ProjectConfigError(
                    f"{project.config_path}: {entry.label} clashes with the built-in graph "
                    f"{entry.graph_id!r} of graphs/registry.py: graph ids are assistant ids "
                    "and must be unique; rename it in the langgraph.json."
                )
    if _project is not None:
        for entry in _project.graphs:
            GRAPHS.pop(entry.graph_id, None)
            DESCRIPTIONS.pop(entry.graph_id, None)
    _project = project
    if project is None:
        return
    warn_ignored_keys(project)
    apply_environment(project)
    for entry in project.graphs:
        GRAPHS[entry.graph_id] = graph_factory(entry)
        DESCRIPTIONS[entry.graph_id] = entry.description


def check_project() -> None:
    """Import every graph of the registered project and check what it names (the local
    stack calls this at start-up, so a wrong entry fails there and not at the first run)."""
    if _project is None:
        return
    for entry in _project.graphs:
        load_attribute(entry)


def load_project_from_environment() -> Project | None:
    """Find, read and register the project ``LAMBDAGRAPH_PROJECT`` names (or the root's)."""
    path = find_project(os.environ.get(PROJECT_ENV))
    project = read_project(path) if path is not None else None
    use_project(project)
    return project


load_project_from_environment()

"""The ``research`` graph: a subgraph, custom stream events, model tokens and an interrupt."""

from graphs.research.graph import build_graph

__all__ = ["build_graph"]

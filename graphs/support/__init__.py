"""The ``support`` graph: a customer-support supervisor."""

from graphs.support.graph import build_graph

__all__ = ["build_graph"]

from __future__ import annotations

from langgraph.graph import MessagesState


class SupportState(MessagesState):
    """Conversation plus the route the classifier chose for the last user message."""

    route: str

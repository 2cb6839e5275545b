from __future__ import annotations

from typing import Literal

from langgraph.graph import MessagesState
from pydantic import BaseModel, Field


class Classification(BaseModel):
    """Where a customer-support message should go, and how sure the classifier is."""

    route: Literal["billing", "technical", "general", "cancel"] = Field(
        description="billing, technical, general, or cancel (the customer wants to close "
        "their account)"
    )
    confidence: float = Field(
        ge=0.0, le=1.0, description="How sure you are of the route, from 0 to 1"
    )
    reason: str = Field(max_length=300, description="Why, in a few words")


class SupportState(MessagesState):
    """Conversation plus the route the classifier chose for the last user message, with its
    confidence and reason (the classifier's structured output)."""

    route: str
    confidence: float
    reason: str

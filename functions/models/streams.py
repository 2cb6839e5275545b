"""Streaming a call through a wrapped chat model (``managed.py``, ``routing.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk


def stream_chunks(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    run_manager: CallbackManagerForLLMRun | None,
    **kwargs: Any,
) -> Iterator[ChatGenerationChunk]:
    """``model``'s chunks for the call; its whole answer as one chunk if it cannot stream."""
    if type(model)._stream is BaseChatModel._stream:
        result = model._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        message = result.generations[0].message
        yield ChatGenerationChunk(message=AIMessageChunk(**message.model_dump()))
        return
    yield from model._stream(messages, stop=stop, run_manager=run_manager, **kwargs)

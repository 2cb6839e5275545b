"""A deterministic chat model for running graphs without model credentials.

The same conversation always gives the same reply, so tests, the local stack and benchmarks
are reproducible and cost nothing. It understands two kinds of prompts, told apart by the
system message: a *classifier* prompt (answers with one route label by keyword) and any
other prompt (answers with a canned reply naming the specialist that system message sets).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

CLASSIFIER_MARKER = "[classify]"

# Keyword routing as the issue specifies; order matters only when keywords of two routes mix.
ROUTE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "cancel": ("cancel my account", "close my account", "delete my account", "cancel account"),
    "billing": ("charge", "invoice", "refund", "payment", "subscription"),
    "technical": ("error", "crash", "bug", "timeout", "connection"),
}

SPECIALIST_REPLIES: dict[str, str] = {
    "billing": "Billing here: I have looked at your account and will sort out the charge.",
    "technical": "Technical support here: please try again; I have logged the problem for our engineers.",
    "general": "Thanks for reaching out! Happy to help with anything else you need.",
}


def classify_text(text: str) -> str:
    """Route label for a user message: cancel, billing, technical or general."""
    lowered = text.lower()
    for route, keywords in ROUTE_KEYWORDS.items():
        if any(keyword in lowered for keyword in keywords):
            return route
    return "general"


def _last_human_text(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return str(message.content)
    return ""


def _system_text(messages: Sequence[BaseMessage]) -> str:
    return " ".join(str(m.content) for m in messages if isinstance(m, SystemMessage))


class OfflineChatModel(BaseChatModel):
    """Keyword-routing chat model; no network, no randomness."""

    # The name usage is counted and priced under (functions/models/prices.py: ``offline``).
    model_name: str = "offline"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "fake"
        params["ls_model_name"] = self.model_name
        return params

    @property
    def _llm_type(self) -> str:
        return "lambdagraph-offline"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = _reply(messages)
        message = AIMessage(
            content=reply,
            usage_metadata=_usage(messages, reply),
            response_metadata={"model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """The same reply, a word (with the space before it) at a time, as a real model
        streams tokens; the usage comes with the last chunk."""
        reply = _reply(messages)
        tokens = re.findall(r"\s*\S+", reply) or [reply]
        for i, token in enumerate(tokens):
            last = i == len(tokens) - 1
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(
                    content=token,
                    usage_metadata=_usage(messages, reply) if last else None,
                    response_metadata={"model_name": self.model_name} if last else {},
                    chunk_position="last" if last else None,
                )
            )
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


def _reply(messages: Sequence[BaseMessage]) -> str:
    system = _system_text(messages)
    user_text = _last_human_text(messages)
    if CLASSIFIER_MARKER in system:
        return classify_text(user_text)
    specialist = next((s for s in SPECIALIST_REPLIES if f"[{s}]" in system), "general")
    return SPECIALIST_REPLIES[specialist]


def _usage(messages: Sequence[BaseMessage], reply: str) -> Any:
    # Token counts are word counts: deterministic and good enough for budget tests.
    input_tokens = sum(len(str(m.content).split()) for m in messages)
    output_tokens = len(reply.split())
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }

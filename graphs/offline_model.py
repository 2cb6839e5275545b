"""A deterministic chat model for running graphs without model credentials.

The same conversation always gives the same reply, so tests, the local stack and benchmarks
are reproducible and cost nothing. It understands three kinds of prompts, told apart by the
system message:

- a *classifier* prompt (``[classify]``): one route label by keyword, or, with tools bound
  (``with_structured_output`` binds the schema as a tool, LangChain's default), a tool call
  carrying the route, a confidence derived from the keyword hits and a short reason;
- a *research* prompt (``[research]``) with tools bound: a ReAct turn — call ``search_docs``
  (and ``calculator`` when the question holds arithmetic), retry a failed call once, then
  answer from the observations citing the documents as ``[doc-id]``;
- any other prompt: a canned reply naming the specialist that system message sets.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

CLASSIFIER_MARKER = "[classify]"
RESEARCH_MARKER = "[research]"
# The research graph's tools, by the names the model sees (graphs/research/tools.py).
SEARCH_TOOL = "search_docs"
CALCULATOR_TOOL = "calculator"
# A research note from the reviewer node is a human message with this name: not a question.
REVIEWER_NAME = "reviewer"

# Keyword routing as the issue specifies; order matters only when keywords of two routes mix.
ROUTE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "cancel": ("cancel my account", "close my account", "delete my account", "cancel account"),
    "billing": ("charge", "invoice", "refund", "payment", "subscription"),
    "technical": ("error", "crash", "bug", "timeout", "connection", "log in", "login"),
}
# Words of small talk and general questions, matched as whole words ("hi" is not "this"):
# they make a general answer confident; a message matching no keyword at all is not.
GENERAL_WORDS: tuple[str, ...] = (
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank you",
    "opening hours",
    "hours",
    "ship",
    "shipping",
    "question",
)
_GENERAL = re.compile(r"\b(" + "|".join(re.escape(w) for w in GENERAL_WORDS) + r")\b")

SPECIALIST_REPLIES: dict[str, str] = {
    "billing": "Billing here: I have looked at your account and will sort out the charge.",
    "technical": "Technical support here: please try again; I have logged the problem for our engineers.",
    "general": "Thanks for reaching out! Happy to help with anything else you need.",
}

# Arithmetic a question may hold ("4 * 19", "(120 - 20) / 4"); checked by the calculator.
_ARITHMETIC = re.compile(
    r"[(\s]*-?\d+(?:\.\d+)?[)\s]*(?:(?:\*\*|[-+*/%])[(\s]*-?\d+(?:\.\d+)?[)\s]*)+"
)


def classify_with_confidence(text: str) -> tuple[str, float, str]:
    """(route, confidence 0..1, reason) for a user message, by keyword hits.

    One route's keywords: confident (0.7, +0.1 per further keyword, at most 0.95). Keywords of
    two routes: the first in ``ROUTE_KEYWORDS``' order wins, at 0.45. Only general words:
    general at 0.7. Nothing matched: general at 0.3. No text at all: general at 0.9 (there
    is nothing to route, and nobody to ask about it).
    """
    lowered = text.lower()
    if not lowered.strip():
        return "general", 0.9, "no customer message to route"
    hits = {
        route: [k for k in keywords if k in lowered] for route, keywords in ROUTE_KEYWORDS.items()
    }
    matched = {route: words for route, words in hits.items() if words}
    if not matched:
        words = sorted(set(_GENERAL.findall(lowered)))
        if words:
            return "general", 0.7, f"general words: {', '.join(words)}"
        return "general", 0.3, "no route keyword matched"
    route = next(iter(matched))
    if len(matched) > 1:
        mixed = "; ".join(f"{r}: {', '.join(w)}" for r, w in matched.items())
        return route, 0.45, f"keywords of several routes ({mixed})"
    words = matched[route]
    confidence = min(0.95, 0.7 + 0.1 * (len(words) - 1))
    return route, round(confidence, 2), f"{route} keywords: {', '.join(words)}"


def classify_text(text: str) -> str:
    """Route label for a user message: cancel, billing, technical or general."""
    return classify_with_confidence(text)[0]


def _last_human_text(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return str(message.content)
    return ""


def _system_text(messages: Sequence[BaseMessage]) -> str:
    return " ".join(str(m.content) for m in messages if isinstance(m, SystemMessage))


class OfflineChatModel(BaseChatModel):
    """Keyword-routing chat model; no network, no randomness. Supports tool calling (and so
    ``with_structured_output``): tools bound with ``bind_tools`` reach each call as the
    ``tools`` keyword, also through the platform's managed-model wrapper."""

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

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools as OpenAI-format schemas (what a real provider's model sends)."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply, calls = _respond(messages, kwargs.get("tools"))
        message = AIMessage(
            content=reply,
            tool_calls=calls,
            usage_metadata=_usage(messages, reply, calls),
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
        streams tokens; tool calls and the usage come with the last chunk."""
        reply, calls = _respond(messages, kwargs.get("tools"))
        tokens = re.findall(r"\s*\S+", reply) or [reply]
        for i, token in enumerate(tokens):
            last = i == len(tokens) - 1
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(
                    content=token,
                    tool_call_chunks=[
                        {
                            "name": call["name"],
                            "args": json.dumps(call["args"]),
                            "id": call["id"],
                            "index": n,
                            "type": "tool_call_chunk",
                        }
                        for n, call in enumerate(calls)
                    ]
                    if last
                    else [],
                    usage_metadata=_usage(messages, reply, calls) if last else None,
                    response_metadata={"model_name": self.model_name} if last else {},
                    chunk_position="last" if last else None,
                )
            )
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


def _tool_names(tools: Any) -> list[str]:
    names = []
    for tool in tools or []:
        if isinstance(tool, dict):
            function = tool.get("function") or {}
            names.append(str(function.get("name") or tool.get("name") or ""))
    return names


def _call(messages: Sequence[BaseMessage], name: str, args: dict[str, Any], n: int) -> ToolCall:
    # Deterministic ids: the same conversation gives the same calls, in every process.
    seed = f"{len(messages)}:{n}:{name}:{json.dumps(args, sort_keys=True)}"
    call_id = "call_" + hashlib.sha256(seed.encode()).hexdigest()[:16]
    return ToolCall(name=name, args=args, id=call_id, type="tool_call")


def _respond(messages: Sequence[BaseMessage], tools: Any) -> tuple[str, list[ToolCall]]:
    """The reply text and the tool calls for ``messages``, given the bound ``tools``."""
    system = _system_text(messages)
    names = _tool_names(tools)
    if CLASSIFIER_MARKER in system:
        if not names:
            return classify_text(_last_human_text(messages)), []
        route, confidence, reason = classify_with_confidence(_last_human_text(messages))
        args = {"route": route, "confidence": confidence, "reason": reason}
        return "", [_call(messages, names[0], args, 0)]
    if RESEARCH_MARKER in system and names:
        return _research(messages, names)
    specialist = next((s for s in SPECIALIST_REPLIES if f"[{s}]" in system), "general")
    return SPECIALIST_REPLIES[specialist], []


# --- the research agent's turn -------------------------------------------------------------


def arithmetic_in(text: str) -> str | None:
    """The first arithmetic expression in ``text`` with an operator ("4 * 19"), if any."""
    for match in _ARITHMETIC.finditer(text):
        expression = match.group(0).strip()
        if expression.count("(") == expression.count(")") and re.search(r"\d\s*\D", expression):
            return expression
    return None


def _question(messages: Sequence[BaseMessage]) -> int:
    """Index of the question being researched: the last human message not the reviewer's."""
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, HumanMessage) and message.name != REVIEWER_NAME:
            return i
    return -1


def _research(messages: Sequence[BaseMessage], names: list[str]) -> tuple[str, list[ToolCall]]:
    start = _question(messages)
    question = str(messages[start].content) if start >= 0 else ""
    turn = list(messages[start + 1 :])
    rounds = [m for m in turn if isinstance(m, AIMessage) and m.tool_calls]
    if not rounds:
        calls: list[ToolCall] = []
        if SEARCH_TOOL in names:
            calls.append(_call(messages, SEARCH_TOOL, {"query": question}, 0))
        expression = arithmetic_in(question)
        if expression is not None and CALCULATOR_TOOL in names:
            calls.append(_call(messages, CALCULATOR_TOOL, {"expression": expression}, 1))
        if calls:
            return "", calls
    elif len(rounds) == 1 and isinstance(turn[-1], ToolMessage):
        # Observations came back: a call that failed is tried once more, as it was.
        failed = {
            m.tool_call_id for m in turn if isinstance(m, ToolMessage) and m.status == "error"
        }
        retry = [c for c in rounds[-1].tool_calls if c["id"] in failed]
        if retry:
            return "", [_call(messages, c["name"], c["args"], n) for n, c in enumerate(retry)]
    return _answer(question, turn), []


def _observations(turn: Sequence[BaseMessage]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Search hits, calculations and errors the tools gave in this turn (latest first wins)."""
    hits: dict[str, dict[str, Any]] = {}
    sums: list[str] = []
    errors: list[str] = []
    for message in turn:
        if not isinstance(message, ToolMessage):
            continue
        if message.status == "error":
            errors.append(f"{message.name}: {message.content}")
            continue
        try:
            data = json.loads(str(message.content))
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        for hit in data.get("hits") or []:
            if isinstance(hit, dict) and "id" in hit:
                hits.setdefault(str(hit["id"]), hit)
        if "value" in data and "expression" in data:
            sums.append(f"{data['expression']} = {data['value']}")
    return list(hits.values()), sums, errors


_COMMON_WORDS = frozenset(
    {"a", "an", "and", "are", "do", "does", "for", "how", "i", "in", "is", "it", "much"}
    | {"my", "of", "on", "or", "the", "to", "what", "when", "which", "with", "you"}
)


def _best_sentence(text: str, question: str) -> str:
    """The sentence of ``text`` sharing the most words with ``question`` (the first on ties)."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    if not sentences:
        return ""

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z0-9]+", text.lower())) - _COMMON_WORDS

    asked = words(question)
    best = max(sentences, key=lambda s: len(asked & words(s)))
    return best if best.endswith((".", "!", "?")) else f"{best}."


def _answer(question: str, turn: Sequence[BaseMessage]) -> str:
    hits, sums, errors = _observations(turn)
    parts = []
    if hits:
        top = hits[0]
        parts.append(f"{_best_sentence(str(top.get('snippet', '')), question)} [{top['id']}]")
        more = ", ".join(f"[{h['id']}]" for h in hits[1:3])
        if more:
            parts.append(f"See also {more}.")
    elif errors:
        parts.append("I could not search the documentation (" + "; ".join(errors) + ").")
    else:
        parts.append("The documentation says nothing about that.")
    parts.extend(f"{s}." for s in sums)
    return " ".join(parts)


def _usage(messages: Sequence[BaseMessage], reply: str, calls: Sequence[ToolCall] = ()) -> Any:
    # Token counts are word counts: deterministic and good enough for budget tests.
    input_tokens = sum(len(str(m.content).split()) for m in messages)
    output_tokens = len(reply.split()) + sum(len(json.dumps(c["args"]).split()) for c in calls)
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }

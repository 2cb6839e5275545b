"""The chat model the platform hands a graph when model limits are configured: the graph's
own model behind the shared rate limits, retries and circuit breaker (``limits.py``).

- Before each call it takes capacity from the model's buckets; none -> ``RateLimited``, and
  the step worker re-queues the step with the delay the buckets give (no function sleeps).
- A transient failure (5xx, timeout, connection error) is retried at once a few times with
  exponential backoff and full jitter; then it counts against the breaker, and the step is
  deferred (``ModelUnavailable``). A provider 429 is not retried here: it drains the buckets
  until its ``retry-after`` and defers the step.
- While the breaker is open calls go to the configured fallback model (itself managed), or
  the step is deferred; after the cool-down one call probes the model and closes or reopens
  the breaker.

Tools and structured output work as on the wrapped model: ``bind_tools`` asks the wrapped
model to format the tools and binds the result to this one.
"""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from functions.models.context import current_step
from functions.models.limits import ModelGate, ModelUnavailable, RateLimited, Ticket
from functions.models.streams import stream_chunks


class ModelCallTimeout(TimeoutError):
    """A model call that did not answer in ``ManagedChatModel.timeout_s``."""


def classify_error(exc: BaseException) -> tuple[str, float | None]:
    """``("rate", retry_after)`` for a provider 429, ``("transient", None)`` for what may
    pass (5xx, 408, timeouts, connection errors), ``("fatal", None)`` otherwise."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
        if status is None and isinstance(response, dict):  # botocore ClientError
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            code = (response.get("Error") or {}).get("Code", "")
            if code in ("ThrottlingException", "TooManyRequestsException"):
                status = 429
            elif code in ("ServiceUnavailableException", "ModelNotReadyException"):
                status = 503
    if status == 429:
        return "rate", _retry_after(response)
    if isinstance(status, int) and (status >= 500 or status == 408):
        return "transient", None
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | ConnectionError) or "Timeout" in name or "Connection" in name:
        return "transient", None
    return "fatal", None


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    if headers is None and isinstance(response, dict):
        headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders")
    if not headers:
        return None
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    """A call's tokens before it is made: about 4 characters a token for the prompt, plus a
    modest reply. ``settle`` puts the real count in the bucket afterwards."""
    chars = sum(len(str(m.content)) for m in messages)
    return chars // 4 + 256


class ManagedChatModel(BaseChatModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    gate: ModelGate
    fallback: BaseChatModel | None = None
    # Immediate retries of a transient failure, with backoff (base, cap) in seconds.
    retries: int = 2
    backoff_s: float = 0.5
    backoff_cap_s: float = 4.0
    # A call that has not answered after this long counts as a timeout (transient): a hung
    # provider must not hold the step until the function's own timeout. 0 = no limit.
    timeout_s: float = 120.0
    sleep: Callable[[float], None] = time.sleep

    @property
    def _llm_type(self) -> str:
        return f"lambdagraph-managed-{getattr(self.inner, '_llm_type', 'model')}"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        # Accounting and tracing see the wrapped model.
        return self.inner._get_ls_params(stop=stop, **kwargs)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        bound = self.inner.bind_tools(tools, **kwargs)
        return self.bind(**getattr(bound, "kwargs", {}))

    # --- calls ---------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        def call(model: BaseChatModel) -> ChatResult:
            return model._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

        return self._managed(messages, call, _result_tokens)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # The call is gated and retried as a whole; its chunks are streamed once it is made
        # (a failure half-way through a stream cannot be retried without repeating tokens).
        def call(model: BaseChatModel) -> list[ChatGenerationChunk]:
            return list(stream_chunks(model, messages, stop, run_manager, **kwargs))

        yield from self._managed(messages, call, _chunk_tokens)

    def _managed(
        self,
        messages: list[BaseMessage],
        call: Callable[[BaseChatModel], Any],
        tokens: Callable[[Any], int],
    ) -> Any:
        step = current_step()
        priority = step.priority if step is not None else "normal"
        estimated = estimate_tokens(messages)
        try:
            ticket = self.gate.acquire(priority, estimated)
        except ModelUnavailable:
            if self.fallback is None:
                raise
            return call(self.fallback)
        result = self._call_with_retries(ticket, call)
        self.gate.settle(ticket, tokens(result))
        self.gate.succeeded(ticket)
        return result

    def _within_timeout(self, call: Callable[[BaseChatModel], Any]) -> Any:
        if not self.timeout_s:
            return call(self.inner)
        # On a thread of its own, in this context (LangGraph's stream writer, the step): a
        # thread cannot be killed, so a hung call is left behind, its answer unused.
        context = contextvars.copy_context()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-call")
        future = pool.submit(context.run, call, self.inner)
        pool.shutdown(wait=False)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            raise ModelCallTimeout(
                f"model {self.gate.model!r} did not answer within {self.timeout_s:g} s"
            ) from None

    def _call_with_retries(self, ticket: Ticket, call: Callable[[BaseChatModel], Any]) -> Any:
        attempt = 0
        while True:
            try:
                return self._within_timeout(call)
            except (RateLimited, ModelUnavailable):
                raise
            except Exception as exc:
                kind, retry_after = classify_error(exc)
                if kind == "fatal":
                    raise
                if kind == "transient" and attempt < self.retries and not ticket.probe:
                    attempt += 1
                    cap = min(self.backoff_cap_s, self.backoff_s * 2**attempt)
                    self.sleep(random.uniform(0, cap))  # full jitter
                    continue
                self.gate.failed(ticket, rate_limited=kind == "rate", retry_after_s=retry_after)
                if kind == "rate":
                    raise RateLimited(
                        self.gate.model, retry_after or 10.0, "was rate limited by its provider"
                    ) from exc
                raise ModelUnavailable(
                    self.gate.model,
                    min(self.gate.breaker_cooldown_s, 2.0 * 2**attempt),
                    f"failed {attempt + 1} times ({type(exc).__name__}: {exc})",
                ) from exc


def _usage_tokens(message: Any) -> int:
    usage = getattr(message, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))


def _result_tokens(result: ChatResult) -> int:
    return sum(
        _usage_tokens(g.message) for g in result.generations if isinstance(g, ChatGeneration)
    )


def _chunk_tokens(chunks: list[ChatGenerationChunk]) -> int:
    return sum(_usage_tokens(c.message) for c in chunks)

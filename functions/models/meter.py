"""The LangChain callback handler that counts a superstep's model calls (``usage.py``).

Apart from ``usage.py`` because it needs langchain_core, which the handlers do not import
at cold start (the step worker makes a meter when it runs a step).
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from functions.models.usage import ModelUsage, model_usage


class UsageMeter(BaseCallbackHandler):
    """Counts the model calls of one superstep, by model. Nodes run on threads: locked."""

    # Called for model calls inside nodes run by LangGraph's executor threads too.
    run_inline = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[UUID, str] = {}
        self.by_model: dict[str, ModelUsage] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = metadata or {}
        name = metadata.get("ls_model_name") or metadata.get("ls_provider")
        if name:
            with self._lock:
                self._names[run_id] = str(name)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            name = self._names.pop(run_id, None)
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                usage = getattr(message, "usage_metadata", None)
                if not usage:
                    continue
                meta = getattr(message, "response_metadata", None) or {}
                # The model that answered (a fallback's name, a dated variant), else the
                # one asked.
                model = (
                    meta.get("model_name")
                    or name
                    or meta.get("model_id")
                    or meta.get("model")
                    or "unknown"
                )
                with self._lock:
                    self.by_model.setdefault(str(model), ModelUsage()).add(model_usage(usage))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._names.pop(run_id, None)

    def take(self) -> dict[str, ModelUsage]:
        """What was counted since the last ``take``, by model (counted once)."""
        with self._lock:
            taken, self.by_model = self.by_model, {}
            return taken

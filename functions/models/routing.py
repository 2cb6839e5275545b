"""Models per node and per run: the chat model the platform hands a graph chooses, at each
call, which model answers (docs/models.md, "Models per node and per run").

The node a call is made in is LangGraph's ``langgraph_node`` (in the config LangGraph gives
each node); the choice, first match wins:

1. the run's ``config.configurable.models[<node>]``, then its ``models["default"]`` —
   only models the deployment allows runs to pick (``LAMBDAGRAPH_RUN_MODELS``, checked
   when the run is created);
2. the deployment's ``LAMBDAGRAPH_MODELS[<graph>.<node>]``, then ``[<node>]``, then the
   graph's default ``[<graph>.*]``;
3. the deployment's model (``LAMBDAGRAPH_CHAT_MODEL``, else the offline model).

So the ``support`` classifier can run on a cheap model and its specialists on a stronger one
with no change to the graph. Each chosen model is made once per process, behind its rate
limits when those are configured (``managed``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables.config import ensure_config
from pydantic import ConfigDict, Field

from functions.models.factory import ModelSpecError, parse_spec
from functions.models.streams import stream_chunks

# A run's choice of model for all its nodes (``configurable.models.default``).
RUN_DEFAULT = "default"


def parse_routes(text: str) -> dict[str, str]:
    """``LAMBDAGRAPH_MODELS``: ``{"support.classify": "openai:gpt-4o-mini", ...}``."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"LAMBDAGRAPH_MODELS is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ModelSpecError(
            'LAMBDAGRAPH_MODELS must map node names to models: {"support.classify": '
            '"openai:gpt-4o-mini", "billing": "openai:gpt-4o"}'
        )
    for spec in raw.values():
        parse_spec(spec)
    return {k: v.strip() for k, v in raw.items()}


def parse_run_models(text: str) -> frozenset[str]:
    """``LAMBDAGRAPH_RUN_MODELS``: the models a run may pick, comma-separated."""
    specs = frozenset(s.strip() for s in text.split(",") if s.strip())
    for spec in specs:
        parse_spec(spec)
    return specs


@lru_cache(maxsize=8)
def _routes(text: str) -> dict[str, str]:
    return parse_routes(text)


def check_run_models(config: Any, allowed_text: str) -> None:
    """ValueError naming what is wrong with a run's ``configurable.models`` (the API answers
    422): not an object of strings, a malformed model, or one the deployment does not let
    runs pick."""
    configurable = (config or {}).get("configurable") if isinstance(config, dict) else None
    if not isinstance(configurable, dict) or "models" not in configurable:
        return
    models = configurable["models"]
    if not isinstance(models, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in models.items()
    ):
        raise ValueError(
            'config.configurable.models must map node names (or "default") to models, '
            'e.g. {"classify": "openai:gpt-4o-mini"}'
        )
    allowed = parse_run_models(allowed_text)
    for node, spec in models.items():
        try:
            parse_spec(spec)
        except ModelSpecError as exc:
            raise ValueError(f"config.configurable.models[{node!r}]: {exc}") from exc
        if spec.strip() not in allowed:
            listed = ", ".join(sorted(allowed)) or "none (set LAMBDAGRAPH_RUN_MODELS)"
            raise ValueError(
                f"config.configurable.models[{node!r}]: model {spec!r} is not one runs may "
                f"pick here; allowed: {listed}"
            )


class RoutedChatModel(BaseChatModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    default: BaseChatModel
    graph_id: str = ""
    routes: dict[str, str] = Field(default_factory=dict)
    # ``provider:model`` -> the model (made once, behind its limits).
    make: Callable[[str], BaseChatModel]

    @property
    def _llm_type(self) -> str:
        return "lambdagraph-routed"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return self.chosen()._get_ls_params(stop=stop, **kwargs)

    def chosen(self) -> BaseChatModel:
        """The model for a call made now (in the node and run whose config is current)."""
        config = ensure_config()
        node = (config.get("metadata") or {}).get("langgraph_node")
        run_models = (config.get("configurable") or {}).get("models")
        run_models = run_models if isinstance(run_models, dict) else {}
        spec = None
        if node:
            spec = (
                run_models.get(node)
                or run_models.get(RUN_DEFAULT)
                or self.routes.get(f"{self.graph_id}.{node}")
                or self.routes.get(node)
            )
        else:
            spec = run_models.get(RUN_DEFAULT)
        # The graph's own default (``"<graph>.*"``), then the deployment's.
        spec = spec or self.routes.get(f"{self.graph_id}.*")
        return self.make(spec) if spec else self.default

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        # Each provider formats tools its own way: bound as given, formatted at call time
        # by the model chosen then.
        return self.bind(_lambdagraph_tools=(list(tools), kwargs))

    def _call_kwargs(self, model: BaseChatModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        tools = kwargs.pop("_lambdagraph_tools", None)
        if tools is not None:
            bound = model.bind_tools(tools[0], **tools[1])
            kwargs = {**getattr(bound, "kwargs", {}), **kwargs}
        return kwargs

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        model = self.chosen()
        call_kwargs = self._call_kwargs(model, dict(kwargs))
        return model._generate(messages, stop=stop, run_manager=run_manager, **call_kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        model = self.chosen()
        call_kwargs = self._call_kwargs(model, dict(kwargs))
        yield from stream_chunks(model, messages, stop, run_manager, **call_kwargs)


class ModelMaker:
    """``provider:model`` -> the model, made once per process (thread-safe)."""

    def __init__(self, make: Callable[[str], BaseChatModel]) -> None:
        self._make = make
        self._models: dict[str, BaseChatModel] = {}
        self._lock = threading.Lock()

    def __call__(self, spec: str) -> BaseChatModel:
        spec = spec.strip()
        with self._lock:
            if spec not in self._models:
                self._models[spec] = self._make(spec)
            return self._models[spec]


def routes_for(settings: Any) -> dict[str, str]:
    return _routes(settings.models)

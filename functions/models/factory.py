"""``provider:model`` strings -> chat models: the one place a graph's model is made.

- ``openai:<model>``: ``langchain_openai.ChatOpenAI`` (key from ``OPENAI_API_KEY``);
- ``bedrock:<model>``: ``langchain_aws.ChatBedrockConverse`` (the function role's access);
- ``fake:<name>``: the deterministic offline model (streams tokens, reports usage).

Provider SDKs are imported only when such a model is made, so functions that never call a
model (the API, housekeeping) and the step worker's cold start do not pay for them. They are
the optional extra ``models`` (``pip install -e '.[models]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # parse_spec (settings validation) must not import langchain
    from langchain_core.language_models import BaseChatModel


class ModelSpecError(ValueError):
    """A ``provider:model`` string that names no model this platform can make."""


def _openai(model: str) -> BaseChatModel:
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise ModelSpecError(_missing("openai", "langchain-openai")) from exc
    kwargs: dict[str, Any] = {}
    key = openai_api_key()
    if key:
        kwargs["api_key"] = key
    chat: BaseChatModel = ChatOpenAI(model=model, stream_usage=True, **kwargs)
    return chat


def openai_api_key() -> str | None:
    """On AWS the key is in Secrets Manager (``LAMBDAGRAPH_OPENAI_API_KEY_SECRET_ARN``: the
    key itself, or JSON ``{"api_key": ...}``); elsewhere None and ChatOpenAI reads
    ``OPENAI_API_KEY`` itself. Never logged."""
    import json

    from functions.settings import get_settings

    arn = get_settings().openai_api_key_secret_arn
    if not arn:
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    from functions import aws

    try:
        text = str(aws.secrets_client().get_secret_value(SecretId=arn)["SecretString"])
    except (ClientError, BotoCoreError) as exc:
        raise ModelSpecError(
            f"the OpenAI API key could not be read from Secrets Manager ({type(exc).__name__})"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()
    return str(data.get("api_key", "")).strip() if isinstance(data, dict) else text.strip()


def _bedrock(model: str) -> BaseChatModel:
    try:
        from langchain_aws import ChatBedrockConverse
    except ImportError as exc:
        raise ModelSpecError(_missing("bedrock", "langchain-aws")) from exc
    chat: BaseChatModel = ChatBedrockConverse(model=model)
    return chat


def _fake(model: str) -> BaseChatModel:
    from graphs.offline_model import OfflineChatModel

    return OfflineChatModel(model_name=model)


PROVIDERS: dict[str, Callable[[str], BaseChatModel]] = {
    "openai": _openai,
    "bedrock": _bedrock,
    "fake": _fake,
}


def _missing(provider: str, package: str) -> str:
    return (
        f"model provider {provider!r} needs the {package} package: "
        f"pip install {package} (or the project's extra: pip install -e '.[models]')"
    )


def parse_spec(spec: str) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` -> ``("openai", "gpt-4o-mini")``; ModelSpecError if malformed."""
    provider, sep, model = spec.strip().partition(":")
    if not sep or not provider or not model.strip():
        raise ModelSpecError(
            f"model {spec!r} is not 'provider:model' (providers: {', '.join(PROVIDERS)}; "
            "e.g. openai:gpt-4o-mini, bedrock:anthropic.claude-3-haiku-20240307-v1:0, fake:offline)"
        )
    if provider not in PROVIDERS:
        raise ModelSpecError(
            f"model {spec!r}: unknown provider {provider!r} (providers: {', '.join(PROVIDERS)})"
        )
    return provider, model.strip()


def chat_model(spec: str, **_: Any) -> BaseChatModel:
    """The chat model ``spec`` names; ModelSpecError when it names none (or its SDK is
    not installed)."""
    provider, model = parse_spec(spec)
    return PROVIDERS[provider](model)


def platform_model(settings: Any, graph_id: str = "") -> BaseChatModel | None:
    """The model the platform hands graph ``graph_id`` (None: the graph's own offline model):
    the configured one; behind the shared rate limits and breaker when limits are configured
    (functions/models/managed.py); choosing per node and per run when models per node or
    per run are configured (functions/models/routing.py)."""
    from functions.models.limits import limits_table
    from functions.models.routing import ModelMaker, RoutedChatModel, routes_for

    spec = settings.chat_model if settings.chat_model and not settings.offline_model else ""
    limits = limits_table(settings.model_limits)
    routes = routes_for(settings)
    per_run = bool(settings.run_models.strip())
    if not limits and not routes and not per_run:
        return chat_model(spec) if spec else None

    def make(wanted: str) -> BaseChatModel:
        # The offline switch holds for every model a node or a run asks for.
        model = chat_model("fake:offline" if settings.offline_model else wanted)
        return managed(model, settings) if limits else model

    maker = ModelMaker(make)
    default = maker(spec or "fake:offline")
    if not routes and not per_run:
        return default
    return RoutedChatModel(default=default, graph_id=graph_id, routes=routes, make=maker)


def managed(model: BaseChatModel, settings: Any, *, depth: int = 0) -> BaseChatModel:
    """``model`` behind its limits (as it is when none are listed for it)."""
    from functions.models.limits import ModelGate, limit_for, limits_table
    from functions.models.managed import ManagedChatModel

    params = model._get_ls_params()
    name = str(params.get("ls_model_name") or params.get("ls_provider") or "unknown")
    limit = limit_for(name, limits_table(settings.model_limits))
    if limit is None:
        return model
    fallback = None
    if limit.fallback and depth < 2:
        fallback = managed(chat_model(limit.fallback), settings, depth=depth + 1)
    gate = ModelGate(
        settings.runtime_table,
        name,
        limit,
        reserve=settings.rate_reserve_high,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown_s=settings.breaker_cooldown_s,
    )
    return ManagedChatModel(
        inner=model, gate=gate, fallback=fallback, timeout_s=settings.model_timeout_s
    )

"""The HTTP API: routes (Powertools REST resolver, pydantic validation) over the engine.

Routes are thin: parse, call one engine method, shape the answer. ``_error_response`` is the
one place that maps exceptions to status codes.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from re import Match
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.metrics import MetricUnit

from functions.api_models import (
    AssistantSearch,
    CancelAction,
    HistoryQuery,
    RunCreate,
    StateAtCheckpoint,
    StateUpdate,
    ThreadCreate,
    ThreadPatch,
    ThreadSearch,
)
from functions.api_responses import declare_responses
from functions.errors import InfrastructureError, LambdagraphError
from functions.release_metrics import count_for_version, function_version
from functions.resources import METRIC_API_SERVER_ERRORS
from functions.runs import RunService
from functions.threads import ThreadService

logger = Logger(child=True)
metrics = Metrics()

# Ids in paths: thread ids are at most 200 characters when created (ThreadCreate), and a
# longer id would break DynamoDB's key size limits; a longer one is a 422, never a 5xx.
ThreadId = Annotated[str, Path(min_length=1, max_length=200)]
RunId = Annotated[str, Path(min_length=1, max_length=200)]
CheckpointId = Annotated[str, Path(min_length=1, max_length=200)]
AssistantId = Annotated[str, Path(min_length=1, max_length=200)]
RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]

# Powertools keeps the request on the resolver instance, so each thread gets its own: the
# local stack may serve requests concurrently (a join blocks for seconds). On Lambda there
# is one thread and one resolver.
_local = threading.local()


def current_app() -> APIGatewayRestResolver:
    app: APIGatewayRestResolver | None = getattr(_local, "app", None)
    if app is None:
        app = build_app()
        _local.app = app
    return app


@dataclass
class Services:
    threads: ThreadService
    runs: RunService


_services: Services | None = None


def bind(services: Services) -> None:
    global _services
    _services = services


def svc() -> Services:
    if _services is None:  # pragma: no cover - the handler binds before resolving
        raise RuntimeError("API services are not bound")
    return _services


def tenant() -> str:
    return str(current_app().context.get("tenant", "public"))


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, separators=(",", ":")),
        headers=headers or {},
    )


def detail_response(status: int, detail: Any) -> Response[Any]:
    return _json({"detail": detail}, status)


# --- errors: the one mapping from exceptions to status codes -------------------------------


def _client_error(exc: LambdagraphError) -> Response[Any]:
    return detail_response(exc.status_code, str(exc))


def _validation_error(exc: RequestValidationError) -> Response[Any]:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return detail_response(HTTPStatus.UNPROCESSABLE_ENTITY, errors)


def _unsupported_content(exc: RequestUnsupportedContentType) -> Response[Any]:
    # functions.handlers.api reads every body as JSON; kept for callers that bypass it.
    return detail_response(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc))


def count_server_error(context: Any) -> None:
    """Count a 5xx answer: in total, and for the function version that gave it.

    Lambda's own ``Errors`` stays 0 for an answered 500, so this is what a canary release
    of a broken API shows first (its alarm reads the new version's count, see
    infra/constructs/monitoring.py). The per-version count is flushed at once, with its
    own dimensions; the total goes out with the invocation's other metrics.
    """
    metrics.add_metric(name=METRIC_API_SERVER_ERRORS, unit=MetricUnit.Count, value=1)
    count_for_version(METRIC_API_SERVER_ERRORS, function_version(context))


def unavailable_response(context: Any) -> Response[Any]:
    """503 for an AWS failure (throttling, timeouts, a missing permission): retry later."""
    logger.exception("infrastructure error")
    count_server_error(context)
    return detail_response(
        HTTPStatus.SERVICE_UNAVAILABLE, "Temporarily unavailable; retry shortly."
    )


def _infrastructure_error(exc: InfrastructureError) -> Response[Any]:
    return unavailable_response(current_app().lambda_context)


def _unexpected_error(exc: Exception) -> Response[Any]:
    # A bug on our side: log it with the traceback, answer without leaking internals.
    logger.exception("unhandled error")
    count_server_error(current_app().lambda_context)
    return detail_response(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error; it has been logged.")


def _not_found(_exc: Exception) -> Response[Any]:
    return detail_response(
        HTTPStatus.NOT_FOUND, f"No route for {current_app().current_event.path}."
    )


# --- meta ---------------------------------------------------------------------------------


def ok() -> dict[str, Any]:
    return {"ok": True}


def openapi() -> Response[Any]:
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=current_app().get_openapi_json_schema(title="lambdagraph", version="0.1.0"),
    )


# --- assistants (one per registered graph) --------------------------------------------------


def _assistant(graph_id: str) -> dict[str, Any]:
    from graphs.registry import DESCRIPTIONS

    epoch = "1970-01-01T00:00:00+00:00"
    return {
        "assistant_id": graph_id,
        "graph_id": graph_id,
        "config": {},
        "context": {},
        "created_at": epoch,
        "updated_at": epoch,
        "metadata": {"created_by": "system"},
        "version": 1,
        "name": graph_id,
        "description": DESCRIPTIONS.get(graph_id),
    }


def search_assistants(body: AssistantSearch) -> Response[Any]:
    from graphs.registry import graph_ids

    found = [
        _assistant(g)
        for g in graph_ids()
        if (body.graph_id is None or body.graph_id == g) and (body.name is None or body.name == g)
    ]
    return _json(found[body.offset : body.offset + body.limit])


def get_assistant(assistant_id: AssistantId) -> Response[Any]:
    from functions.errors import NotFoundError
    from functions.graph_loader import resolve_assistant_id
    from graphs.registry import graph_ids

    graph_id = resolve_assistant_id(assistant_id)
    if graph_id not in graph_ids():
        raise NotFoundError(f"Assistant {assistant_id!r} not found.")
    return _json(_assistant(graph_id))


def _compiled(assistant_id: str) -> Any:
    from functions.graph_loader import load_graph, resolve_assistant_id

    return load_graph(resolve_assistant_id(assistant_id), svc().runs.settings)


def get_assistant_graph(
    assistant_id: AssistantId, xray: Annotated[str | None, Query()] = None
) -> Response[Any]:
    from functions.assistant_schemas import graph_json, parse_xray

    return _json(graph_json(_compiled(assistant_id), parse_xray(xray)))


def get_assistant_schemas(assistant_id: AssistantId) -> Response[Any]:
    from functions.assistant_schemas import graph_schemas
    from functions.graph_loader import resolve_assistant_id

    graph_id = resolve_assistant_id(assistant_id)
    return _json({"graph_id": graph_id, **graph_schemas(_compiled(graph_id))})


def get_assistant_subgraphs(assistant_id: AssistantId) -> Response[Any]:
    from functions.assistant_schemas import subgraph_schemas

    return _json(subgraph_schemas(_compiled(assistant_id)))


# --- threads --------------------------------------------------------------------------------


def create_thread(body: Annotated[ThreadCreate | None, Body()] = None) -> Response[Any]:
    thread = svc().threads.create(tenant(), body or ThreadCreate())
    return _json(thread.to_api())


def search_threads(body: Annotated[ThreadSearch | None, Body()] = None) -> Response[Any]:
    return _json(svc().threads.search(tenant(), body or ThreadSearch()))


def get_thread(thread_id: ThreadId) -> Response[Any]:
    return _json(svc().threads.get(tenant(), thread_id).to_api())


def patch_thread(thread_id: ThreadId, body: ThreadPatch) -> Response[Any]:
    return _json(svc().threads.patch(tenant(), thread_id, body.metadata).to_api())


def delete_thread(thread_id: ThreadId) -> Response[Any]:
    svc().threads.delete(tenant(), thread_id)
    return Response(status_code=HTTPStatus.NO_CONTENT, body="")


def get_state(thread_id: ThreadId) -> Response[Any]:
    return _json(svc().threads.state(tenant(), thread_id))


def get_state_at(thread_id: ThreadId, checkpoint_id: CheckpointId) -> Response[Any]:
    return _json(svc().threads.state(tenant(), thread_id, checkpoint_id))


def post_state_at(thread_id: ThreadId, body: StateAtCheckpoint) -> Response[Any]:
    return _json(svc().threads.state(tenant(), thread_id, body.checkpoint.checkpoint_id))


def update_state(thread_id: ThreadId, body: StateUpdate) -> Response[Any]:
    return _json(svc().threads.update_state(tenant(), thread_id, body))


def history(
    thread_id: ThreadId, body: Annotated[HistoryQuery | None, Body()] = None
) -> Response[Any]:
    return _json(svc().threads.history(tenant(), thread_id, body or HistoryQuery()))


def history_get(
    thread_id: ThreadId, limit: Annotated[int, Query(ge=1, le=1000)] = 10
) -> Response[Any]:
    return _json(svc().threads.history(tenant(), thread_id, HistoryQuery(limit=limit)))


# --- runs -----------------------------------------------------------------------------------


def _run_location(thread_id: str, run_id: str) -> dict[str, str]:
    # Percent-encoded: a thread id may hold any character, a header only ASCII.
    return {"Content-Location": f"/threads/{quote(thread_id, safe='')}/runs/{run_id}"}


def _join_location(thread_id: str, run_id: str) -> dict[str, str]:
    # As the official server: where the final values can be fetched again. The SDK reconnects
    # to ``Location`` when a long ``wait``/``join`` answer is cut off.
    return {
        **_run_location(thread_id, run_id),
        "Location": f"/threads/{quote(thread_id, safe='')}/runs/{run_id}/join",
    }


def create_run(thread_id: ThreadId, body: RunCreate) -> Response[Any]:
    from functions.streaming.modes import records_background_stream

    if not records_background_stream(body.stream_mode, body.stream_resumable):
        body = body.without_stream()
    run = svc().runs.create(tenant(), thread_id, body)
    return _json(run.to_api(), headers=_run_location(thread_id, run.run_id))


def wait_run(thread_id: ThreadId, body: RunCreate) -> Response[Any]:
    runs = svc().runs
    run = runs.create(tenant(), thread_id, body.without_stream())
    values = runs.join(tenant(), thread_id, run.run_id)
    return _json(values, headers=_join_location(thread_id, run.run_id))


def create_stateless_run(body: RunCreate) -> Response[Any]:
    # A thread of its own, kept afterwards (documented: the official server deletes it).
    thread = svc().threads.create(tenant(), ThreadCreate(metadata={"stateless": True}))
    return create_run(thread.thread_id, body)


def wait_stateless_run(body: RunCreate) -> Response[Any]:
    thread = svc().threads.create(tenant(), ThreadCreate(metadata={"stateless": True}))
    return wait_run(thread.thread_id, body)


def list_runs(
    thread_id: ThreadId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: Annotated[RunStatus | None, Query()] = None,
) -> Response[Any]:
    runs = svc().runs.list(tenant(), thread_id, limit=limit, offset=offset, status=status)
    return _json([r.to_api() for r in runs])


def get_run(thread_id: ThreadId, run_id: RunId) -> Response[Any]:
    return _json(svc().runs.get(tenant(), thread_id, run_id).to_api())


def get_run_webhooks(thread_id: ThreadId, run_id: RunId) -> Response[Any]:
    from functions.webhooks.api import run_webhooks

    return _json(run_webhooks(svc().runs, tenant(), thread_id, run_id))


def join_run(thread_id: ThreadId, run_id: RunId) -> Response[Any]:
    values = svc().runs.join(tenant(), thread_id, run_id)
    return _json(values, headers=_join_location(thread_id, run_id))


def cancel_run(
    thread_id: ThreadId,
    run_id: RunId,
    wait: Annotated[int, Query(ge=0, le=1)] = 0,
    action: Annotated[CancelAction, Query()] = "interrupt",
) -> Response[Any]:
    run = svc().runs.cancel(tenant(), thread_id, run_id, action=action, wait=bool(wait))
    if wait:
        return _json(run.to_api(), headers=_join_location(thread_id, run_id))
    return Response(
        status_code=HTTPStatus.ACCEPTED, content_type=content_types.APPLICATION_JSON, body=""
    )


class _Resolver(APIGatewayRestResolver):
    """Path parameters percent-decoded.

    API Gateway REST passes ``path`` still percent-encoded and Powertools matches routes on
    it (right: ``%2F`` stays inside one segment) but hands the values on encoded, so a thread
    ``ü`` (``/threads/%C3%BC``) was never found. Bytes that are not UTF-8 become U+FFFD,
    which no id the API issued holds: a 404.
    """

    def _convert_matches_into_route_keys(self, match: Match[str]) -> dict[str, str]:
        return {k: unquote(v, errors="replace") for k, v in match.groupdict().items()}


def build_app() -> APIGatewayRestResolver:
    """A resolver with every route and error mapping registered."""
    app = _Resolver(enable_validation=True)
    app.enable_swagger(path="/docs", title="lambdagraph", version="0.1.0")
    app.exception_handler(LambdagraphError)(_client_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(RequestUnsupportedContentType)(_unsupported_content)
    app.exception_handler(InfrastructureError)(_infrastructure_error)
    app.exception_handler(Exception)(_unexpected_error)
    app.not_found(_not_found)
    app.get("/ok")(ok)
    app.get("/openapi.json", include_in_schema=False)(openapi)
    app.post("/assistants/search")(search_assistants)
    app.get("/assistants/<assistant_id>")(get_assistant)
    app.get("/assistants/<assistant_id>/graph")(get_assistant_graph)
    app.get("/assistants/<assistant_id>/schemas")(get_assistant_schemas)
    app.get("/assistants/<assistant_id>/subgraphs")(get_assistant_subgraphs)
    app.post("/threads")(create_thread)
    app.post("/threads/search")(search_threads)
    app.get("/threads/<thread_id>")(get_thread)
    app.patch("/threads/<thread_id>")(patch_thread)
    app.delete("/threads/<thread_id>")(delete_thread)
    app.get("/threads/<thread_id>/state")(get_state)
    app.get("/threads/<thread_id>/state/<checkpoint_id>")(get_state_at)
    app.post("/threads/<thread_id>/state/checkpoint")(post_state_at)
    app.post("/threads/<thread_id>/state")(update_state)
    app.post("/threads/<thread_id>/history")(history)
    app.get("/threads/<thread_id>/history")(history_get)
    app.post("/threads/<thread_id>/runs")(create_run)
    app.post("/threads/<thread_id>/runs/wait")(wait_run)
    app.post("/runs")(create_stateless_run)
    app.post("/runs/wait")(wait_stateless_run)
    app.get("/threads/<thread_id>/runs")(list_runs)
    app.get("/threads/<thread_id>/runs/<run_id>")(get_run)
    app.get("/threads/<thread_id>/runs/<run_id>/join")(join_run)
    app.get("/threads/<thread_id>/runs/<run_id>/webhooks")(get_run_webhooks)
    app.post("/threads/<thread_id>/runs/<run_id>/cancel")(cancel_run)
    from functions.approvals.routes import register as register_approvals

    register_approvals(app)
    declare_responses(app)
    return app

"""API Lambda: API Gateway REST (v1 proxy) event in, ``{statusCode, headers, body}`` out."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

from functions.api_app import Services, bind, current_app, detail_response, unavailable_response
from functions.api_body import BodyError, prepare_body
from functions.api_cors import add_cors, allowed_origins, is_preflight, preflight_response
from functions.approvals.pages import is_page_path
from functions.auth import authenticate
from functions.errors import InfrastructureError, LambdagraphError
from functions.resources import API_MAX_BODY_BYTES
from functions.runs import RunService
from functions.settings import get_settings
from functions.threads import ThreadService

logger = Logger()
tracer = Tracer()
# Cancels and multitask interrupts end runs in this function too (RunsInterrupted).
metrics = Metrics()

MAX_BODY_BYTES = API_MAX_BODY_BYTES
# Paths anyone may read: health, and the API description.
PUBLIC_PATHS = frozenset({"/ok", "/openapi.json", "/docs"})

_services: Services | None = None


def default_services() -> Services:
    global _services
    if _services is None:
        settings = get_settings()
        runs = RunService.from_settings(settings)
        _services = Services(threads=ThreadService(settings, runs.store), runs=runs)
    return _services


def _body_size(event: dict[str, Any]) -> int:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(base64.b64decode(body))
    return len(body.encode())


def _header(event: dict[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return str(value)
    return None


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(
    event: dict[str, Any], context: Any, services: Services | None = None
) -> dict[str, Any]:
    services = services or default_services()
    bind(services)
    origins = allowed_origins(services.runs.settings.cors_origins)
    # A browser's preflight carries no API key: it is answered before authentication.
    if is_preflight(event, _header):
        return preflight_response(event, _header, origins)
    return add_cors(_answer(event, context, services), _header(event, "origin"), origins)


def _answer(event: dict[str, Any], context: Any, services: Services) -> dict[str, Any]:
    try:
        too_large = _body_size(event) > MAX_BODY_BYTES
    except (binascii.Error, ValueError):
        too_large = False  # not base64 after all: prepare_body answers 422 below
    if too_large:
        return _reply(detail_response(413, "Request body exceeds 1 MiB."), event)
    path = event.get("path") or "/"
    if is_page_path(path):
        # A reviewer's page: authorised by the link's token alone (functions/approvals).
        from functions.approvals.pages import handle
        from functions.approvals.service import ApprovalService

        return handle(event, ApprovalService(services.runs))
    try:
        tenant = (
            "public"
            if path in PUBLIC_PATHS
            else authenticate(
                _header(event, "x-api-key"), services.runs.settings, services.runs.store
            )
        )
    except LambdagraphError as exc:
        return _reply(detail_response(exc.status_code, str(exc)), event)
    except InfrastructureError:
        # The key lookup in the runtime table failed: as any AWS failure, a counted 503.
        return _reply(unavailable_response(context), event)
    try:
        event = prepare_body(event)
    except BodyError as exc:
        return _reply(detail_response(422, exc.errors), event)
    app = current_app()
    app.append_context(tenant=tenant)
    return dict(app.resolve(event, context))


def _reply(response: Any, event: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": response.status_code,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {},
        "body": response.body,
        "isBase64Encoded": False,
    }

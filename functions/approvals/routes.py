"""The API's approval listings (API-key authenticated as the other routes)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "cancelled"]
ThreadId = Annotated[str, Path(min_length=1, max_length=200)]


def _service() -> Any:
    from functions.api_app import svc
    from functions.approvals.service import ApprovalService

    return ApprovalService(svc().runs)


def _json(body: Any) -> Response[Any]:
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, separators=(",", ":")),
    )


def list_thread_approvals(thread_id: ThreadId) -> Response[Any]:
    from functions.api_app import tenant

    return _json(_service().list_thread(tenant(), thread_id))


def list_approvals(status: Annotated[ApprovalStatus | None, Query()] = None) -> Response[Any]:
    from functions.api_app import tenant

    return _json(_service().list_tenant(tenant(), status))


def register(app: APIGatewayRestResolver) -> None:
    app.get("/threads/<thread_id>/approvals")(list_thread_approvals)
    app.get("/approvals")(list_approvals)

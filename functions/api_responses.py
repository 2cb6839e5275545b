"""What each route may answer, declared in the OpenAPI document (``/openapi.json``).

Powertools declares only ``200`` and a ``422`` whose schema (``HTTPValidationError``) does
not fit our errors. Every status the API really answers is declared here from one rule set,
so that clients and fuzzers can hold the API to its document: errors are always
``{"detail": ...}`` (a message, or pydantic-shaped ``{loc, msg, type}`` items for 422).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "required": ["detail"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {"type": "array"},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
            ]
        }
    },
}

_ERRORS = {
    401: "Missing or unknown API key (x-api-key).",
    404: "Unknown thread, run, assistant or checkpoint (or another tenant's).",
    409: "Conflict: the thread is busy (multitask_strategy reject), exists, or the run has ended.",
    413: "Request body over 1 MiB, or a record too large to store.",
    422: "Malformed JSON, or a body, query or path parameter that breaks the schema.",
    503: "AWS is throttling or unreachable: retry shortly.",
}
# Paths (OpenAPI form) that need no API key (functions.handlers.api.PUBLIC_PATHS).
_PUBLIC = frozenset({"/ok", "/openapi.json", "/docs"})
# (method, path) that can answer 409.
_CONFLICTS = frozenset(
    {
        ("POST", "/threads"),
        ("POST", "/threads/{thread_id}/state"),
        ("POST", "/threads/{thread_id}/runs"),
        ("POST", "/threads/{thread_id}/runs/wait"),
        ("POST", "/runs"),
        ("POST", "/runs/wait"),
        ("POST", "/threads/{thread_id}/runs/{run_id}/cancel"),
    }
)
# (method, path) whose success is not a plain 200 with a JSON body.
_NO_CONTENT = {("DELETE", "/threads/{thread_id}"): 204}
_ACCEPTED = frozenset({("POST", "/threads/{thread_id}/runs/{run_id}/cancel")})
# Routes that create runs look up the assistant (404) even without a path parameter.
_RUN_CREATORS = frozenset({"/runs", "/runs/wait"})


def _error(code: int) -> dict[str, Any]:
    return {
        "description": _ERRORS[code],
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    }


def route_responses(method: str, path: str) -> dict[int, Any]:
    """The OpenAPI ``responses`` of one operation."""
    method = method.upper()
    key = (method, path)
    responses: dict[int, Any] = {}
    if key in _NO_CONTENT:
        # An empty "content" keeps Powertools from declaring the return annotation's body.
        responses[_NO_CONTENT[key]] = {"description": "Done; no content.", "content": {}}
    else:
        # No "content": Powertools fills it from the route's return annotation.
        responses[200] = {"description": "Successful Response"}
    if key in _ACCEPTED:
        responses[202] = {
            "description": "Accepted (without wait): takes effect at the next step.",
            "content": {},
        }
    codes = [422]
    if path not in _PUBLIC:
        codes += [401, 503]
    if "{" in path or path in _RUN_CREATORS:
        codes.append(404)
    if key in _CONFLICTS:
        codes.append(409)
    if method in ("POST", "PUT", "PATCH"):
        codes.append(413)
    responses.update({code: _error(code) for code in sorted(codes)})
    return responses


def declare_responses(app: APIGatewayRestResolver) -> None:
    """Set the declared responses of every route registered on ``app`` that has none."""
    # Powertools keeps routes in these two lists and reads ``route.responses`` when it builds
    # the document; setting them here keeps each route registration a one-liner.
    for route in [*app._static_routes, *app._dynamic_routes]:
        if route.responses is None:
            route.responses = route_responses(route.method, route.openapi_path)

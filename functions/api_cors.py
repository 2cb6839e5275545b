"""CORS: browsers (LangGraph Studio, Agent Chat UI, any web front end) may call the API.

A browser sends a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
before a request carrying ``x-api-key``; the preflight has no key, so it is answered here,
before authentication, by the API function itself. On AWS the ``ANY`` proxy methods pass it
through, locally the API adapter does the same, so both answer it with this code.

Allowed origins come from ``LAMBDAGRAPH_CORS_ORIGINS`` (comma-separated, exact
``scheme://host[:port]``; ``*`` allows any origin; empty = no CORS), which ``make deploy
CORS_ORIGINS=...`` sets on AWS. A request from an allowed origin gets
``Access-Control-Allow-Origin`` on every answer, errors (401, 413, 422, 5xx) included, so
the page can read why it failed.
"""

from __future__ import annotations

import re
from typing import Any

from functions.resources import CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS, CORS_MAX_AGE_S

# What a browser may ask to send (RFC 9110 token characters, comma-separated).
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def allowed_origins(setting: str) -> frozenset[str]:
    """The origins of ``LAMBDAGRAPH_CORS_ORIGINS``, normalized (no trailing ``/``, lower case)."""
    return frozenset(
        origin.strip().rstrip("/").lower() for origin in setting.split(",") if origin.strip()
    )


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    if not origin or not allowed:
        return False
    return "*" in allowed or origin.rstrip("/").lower() in allowed


def is_preflight(event: dict[str, Any], header: Any) -> bool:
    return (
        str(event.get("httpMethod") or "").upper() == "OPTIONS"
        and header(event, "origin") is not None
        and header(event, "access-control-request-method") is not None
    )


def preflight_response(
    event: dict[str, Any], header: Any, allowed: frozenset[str]
) -> dict[str, Any]:
    """The answer to a preflight: 204 with the CORS grant, or 403 naming the setting."""
    origin = header(event, "origin")
    if not origin_allowed(origin, allowed):
        return _response(
            403,
            {"Content-Type": "application/json"},
            '{"detail":"Origin not allowed: add it to LAMBDAGRAPH_CORS_ORIGINS '
            '(CORS_ORIGINS for make deploy)."}',
        )
    requested = header(event, "access-control-request-headers") or ""
    headers = {
        **response_headers(origin),
        "Access-Control-Allow-Methods": ", ".join(CORS_ALLOW_METHODS),
        "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
    }
    # The API authenticates by x-api-key, never by cookies: any header the page asks for
    # may be sent (no credentials mode, so no Allow-Credentials either).
    if requested and _HEADER_LIST.match(requested.strip()):
        headers["Access-Control-Allow-Headers"] = requested.strip()
    return _response(204, headers, "")


def response_headers(origin: str | None) -> dict[str, str]:
    """Headers that let the page at ``origin`` (already allowed) read an answer."""
    return {
        "Access-Control-Allow-Origin": str(origin),
        "Access-Control-Expose-Headers": ", ".join(CORS_EXPOSE_HEADERS),
        "Vary": "Origin",
    }


def add_cors(
    response: dict[str, Any], origin: str | None, allowed: frozenset[str]
) -> dict[str, Any]:
    """``response`` with the CORS headers when ``origin`` is allowed (as is otherwise)."""
    if not origin_allowed(origin, allowed):
        return response
    extra = response_headers(origin)
    headers = response.get("headers") or {}
    vary = next((v for k, v in headers.items() if k.lower() == "vary"), None)
    if vary and "origin" not in vary.lower():
        extra["Vary"] = f"{vary}, Origin"
    response["headers"] = {**headers, **extra}
    multi = response.get("multiValueHeaders")
    if multi:
        # API Gateway prefers multiValueHeaders when a key is in both.
        response["multiValueHeaders"] = {**multi, **{k: [v] for k, v in extra.items()}}
    return response


def _response(status: int, headers: dict[str, str], body: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": headers,
        "multiValueHeaders": {},
        "body": body,
        "isBase64Encoded": False,
    }

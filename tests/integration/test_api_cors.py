"""CORS through the API handler: preflights answered before authentication, and every answer
to an allowed origin readable by its page (functions/api_cors.py)."""

from __future__ import annotations

from typing import Any

import pytest

from functions.handlers import api
from functions.resources import CORS_MAX_AGE_S
from tests.integration.conftest import KEY_A, LambdaContext, Stack, load_event

pytestmark = pytest.mark.integration

STUDIO = "https://smith.langchain.com"


@pytest.fixture
def cors_stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return Stack(moto_endpoint, cors_origins=f"{STUDIO}, http://localhost:3000/")


def _call(
    stack: Stack, method: str, path: str, headers: dict[str, str], body: str | None = None
) -> dict[str, Any]:
    event = load_event("api_create_thread.json")
    event.update(httpMethod=method, path=path, body=body, headers=headers)
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    event["requestContext"]["httpMethod"] = method
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    return dict(api.handler(event, LambdaContext(), services=stack.services))


def _headers(response: dict[str, Any]) -> dict[str, str]:
    merged = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        merged[key.lower()] = values[-1]
    return merged


def _preflight(origin: str, requested: str = "x-api-key, content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": requested,
    }


def test_a_preflight_from_an_allowed_origin_is_answered_without_an_api_key(
    cors_stack: Stack,
) -> None:
    # WHEN a browser asks whether its page may POST with an API key (the preflight has none)
    response = _call(cors_stack, "OPTIONS", "/threads", _preflight(STUDIO))
    # THEN the API grants it before authenticating
    headers = _headers(response)
    assert response["statusCode"] == 204
    assert headers["access-control-allow-origin"] == STUDIO
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "x-api-key, content-type"
    assert headers["access-control-max-age"] == str(CORS_MAX_AGE_S)
    assert headers["vary"] == "Origin"


def test_origins_match_without_trailing_slash_or_case(cors_stack: Stack) -> None:
    response = _call(cors_stack, "OPTIONS", "/threads", _preflight("HTTP://LOCALHOST:3000"))
    assert response["statusCode"] == 204


def test_a_preflight_from_another_origin_is_refused_naming_the_setting(cors_stack: Stack) -> None:
    response = _call(cors_stack, "OPTIONS", "/threads", _preflight("https://evil.example"))
    assert response["statusCode"] == 403
    assert "access-control-allow-origin" not in _headers(response)
    assert "LAMBDAGRAPH_CORS_ORIGINS" in response["body"]


def test_answers_to_an_allowed_origin_carry_cors_headers_errors_included(cors_stack: Stack) -> None:
    # GIVEN requests from the allowed page: one with its key, one with a wrong key
    ok = _call(
        cors_stack,
        "POST",
        "/threads",
        {"Origin": STUDIO, "x-api-key": KEY_A, "Content-Type": "application/json"},
        "{}",
    )
    denied = _call(cors_stack, "POST", "/threads", {"Origin": STUDIO, "x-api-key": "wrong"}, "{}")
    # THEN both can be read by the page: the thread, and why it was refused
    for response, status in ((ok, 200), (denied, 401)):
        headers = _headers(response)
        assert response["statusCode"] == status
        assert headers["access-control-allow-origin"] == STUDIO
        assert "Content-Location" in headers["access-control-expose-headers"]


def test_no_cors_headers_for_other_origins_or_without_the_setting(
    cors_stack: Stack, stack: Stack
) -> None:
    other = _call(
        cors_stack, "POST", "/threads", {"Origin": "https://evil.example", "x-api-key": KEY_A}, "{}"
    )
    assert other["statusCode"] == 200
    assert "access-control-allow-origin" not in _headers(other)
    # A deployment without CORS origins grants no page anything, and says how to
    preflight = _call(stack, "OPTIONS", "/threads", _preflight(STUDIO))
    assert "access-control-allow-origin" not in _headers(preflight)
    assert preflight["statusCode"] == 403
    assert "LAMBDAGRAPH_CORS_ORIGINS" in preflight["body"]
